"""On vLLM (serving_mode "vllm") loading a name that is already loaded is refused: vLLM's
``OpenAIServingModels._check_load_lora_adapter_request`` answers 400 "The lora adapter '<name>' has already been
loaded." (MAX instead answers 200 for the same name and path). A version the engine already has loaded from the same
path is not loaded again, whatever the engine: activating the loaded known-good version, or adopting a manual
split's loaded candidate, succeeds on vLLM too, also on another serving process (which loads from its own copy of the
same files). Other files under the name are still asked for, and refused.
"""

from __future__ import annotations

import grpc
import pytest

from engine.serving.reference_errors import HttpError
from engine.serving.reference_model import ReferenceModel
from learning.v1 import lora_control_pb2 as lc
from tests.fixtures.serving import start_backend
from tests.server.conftest import TINY, error_details
from tests.server.lora_helpers import ACTOR, activate, status, stub, train


class VllmLikeModel(ReferenceModel):
    """The reference backend with vLLM's one difference on loads: an already loaded name is a 400."""

    def load(self, name: str, path: str) -> bool:
        if name in self.adapters():
            raise HttpError(400, f"The lora adapter '{name}' has already been loaded.")
        return super().load(name, path)


async def test_activating_the_loaded_known_good_version_on_vllm(make_server, tiny_model_dir):
    backend = await start_backend(VllmLikeModel(tiny_model_dir, TINY))
    try:
        client = await make_server(serving_url=backend.url, serving_mode="vllm")
        v10 = await train(client)
        v11 = await train(client, parent=v10)
        await activate(client, v10, mark_known_good=True)
        await activate(client, v11, force=True)
        assert sorted(a.version for a in (await status(client)).loaded) == sorted([v10, v11])
        try:
            st = (await activate(client, v10, reason="back to v1.0")).status  # v1.0 is loaded (known-good)
        except grpc.aio.AioRpcError as err:
            info, _ = error_details(err)
            pytest.fail(f"activating the loaded known-good {v10} failed: {err.code().name} {info.reason}: "
                        f"{err.details()}")
        assert st.active_version == v10
        assert not st.last_operation.HasField("error")
    finally:
        await backend.stop()


async def test_adopting_a_manual_split_candidate_on_vllm(make_server, tiny_model_dir):
    backend = await start_backend(VllmLikeModel(tiny_model_dir, TINY))
    try:
        client = await make_server(serving_url=backend.url, serving_mode="vllm")
        v10 = await train(client)
        v11 = await train(client, parent=v10)
        await activate(client, v10)
        await stub(client).SetTrafficSplit(lc.SetTrafficSplitRequest(version=v11, share=0.5, reason="A/B"),
                                           metadata=ACTOR)
        try:
            st = (await activate(client, v11, force=True, reason="B won")).status  # the candidate, loaded
        except grpc.aio.AioRpcError as err:
            info, _ = error_details(err)
            pytest.fail(f"activating the split's loaded candidate {v11} failed: {err.code().name} {info.reason}: "
                        f"{err.details()}")
        assert st.active_version == v11
        assert not st.HasField("traffic_split")
    finally:
        await backend.stop()


@pytest.mark.slow
async def test_another_replica_activates_the_version_the_engine_has_from_the_first_ones_copy(
        make_server, tiny_model_dir, data_dir, tmp_path):
    backend = await start_backend(VllmLikeModel(tiny_model_dir, TINY))
    try:
        one = await make_server(serving_url=backend.url, serving_mode="vllm")
        v10 = await train(one)
        v11 = await train(one, parent=v10)
        await activate(one, v10, mark_known_good=True)
        await activate(one, v11, force=True)
        (tmp_path / "replica2").mkdir()
        two = await make_server(serving_url=backend.url, serving_mode="vllm", data_dir=tmp_path / "replica2",
                                datasets_path=data_dir / "datasets", artifacts_path=data_dir / "artifacts")
        st = (await activate(two, v10, reason="back to v1.0")).status  # loaded from replica one's copy
        assert st.active_version == v10 and not st.last_operation.HasField("error")
    finally:
        await backend.stop()


async def test_other_files_under_a_loaded_name_are_refused_by_the_engine(make_server, tiny_model_dir):
    backend = await start_backend(VllmLikeModel(tiny_model_dir, TINY))
    try:
        client = await make_server(serving_url=backend.url, serving_mode="vllm")
        v10 = await train(client)
        v11 = await train(client, parent=v10)
        st = (await activate(client, v11)).status
        backend.model.load(f"{TINY}@{v10}", st.loaded[0].path)  # v1.1's files under v1.0's name (as from elsewhere)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await activate(client, v10, force=True)
        info, _ = error_details(refused.value)
        assert (refused.value.code(), info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SERVING_REJECTED_REQUEST")
        assert (await status(client)).active_version == v11
    finally:
        await backend.stop()
