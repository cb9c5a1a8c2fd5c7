"""A dataset line that is valid JSON syntax but no usable data is INVALID_ARGUMENT DATASET_INVALID with a violation
on that line, never INTERNAL: a weight written as a 400-digit integer (no float holds it: math.isfinite overflowed)
and a string with a lone UTF-16 surrogate escape ("caf\\ud800": no Unicode text, it failed later where the text was
encoded: the dataset digest, the splits, the golden cases' digest). engine.json_input refuses the surrogate for
every reader of outside JSON; engine.training.datasets reads the weight as a float that may overflow."""

from __future__ import annotations

import grpc
import pytest

from learning.v1 import dataset_pb2 as pb
from tests.server.test_datasets import refused, stub, upload_messages

GOOD = {pb.DATASET_KIND_TRAINING: b'{"prompt": "3+3=", "completion": "6"}\n',
        pb.DATASET_KIND_GOLDEN: b'{"prompt": "capital of Peru?", "expected": "Lima"}\n'}


@pytest.mark.parametrize(("bad_line", "kind", "field", "says"), [
    # a weight written as a 400-digit integer: valid JSON, a number, not a finite float
    (b'{"prompt": "2+2=", "completion": "4", "weight": ' + b"1" * 400 + b"}\n", pb.DATASET_KIND_TRAINING,
     "line[2].weight", "finite number > 0"),
    (b'{"prompt": "2+2=", "completion": "4", "weight": -' + b"9" * 400 + b"}\n", pb.DATASET_KIND_TRAINING,
     "line[2].weight", "finite number > 0"),
    # a lone UTF-16 surrogate escape: valid JSON syntax, but no Unicode text (cannot be UTF-8 encoded)
    (b'{"prompt": "caf\\ud800", "completion": "4"}\n', pb.DATASET_KIND_TRAINING, "line[2]", "surrogate"),
    (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\\udfff"}]}\n',
     pb.DATASET_KIND_TRAINING, "line[2]", "surrogate"),
    (b'{"prompt": "capital of France\\udc00?", "expected": "Paris"}\n', pb.DATASET_KIND_GOLDEN, "line[2]",
     "surrogate"),
    (b'{"prompt": "capital of France?", "expected": ["Paris", "\\ud83d"]}\n', pb.DATASET_KIND_GOLDEN, "line[2]",
     "surrogate"),
], ids=["huge-integer-weight", "huge-negative-integer-weight", "lone-surrogate-training", "lone-surrogate-chat",
        "lone-surrogate-golden", "lone-high-surrogate-golden-reference"])
async def test_a_bad_line_is_dataset_invalid_not_internal(make_pg_server, bad_line: bytes, kind: int, field: str,
                                                          says: str) -> None:
    datasets = stub(await make_pg_server())
    content = GOOD[kind] + bad_line

    code, reason, violations = await refused(datasets.ValidateDataset(pb.ValidateDatasetRequest(
        content=content, kind=kind)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_INVALID"), \
        f"ValidateDataset of a bad line 2 answered {code} {reason} {violations}, not INVALID_ARGUMENT DATASET_INVALID"
    assert [f for f, _ in violations] == [field], f"expected one violation on {field}, got {violations}"
    assert says in violations[0][1], f"the violation does not say what is wrong ({says!r}): {violations}"

    code, reason, violations = await refused(
        datasets.UploadDataset(upload_messages("datasets/bad-line", content, kind=kind)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DATASET_INVALID"), \
        f"UploadDataset of a bad line 2 answered {code} {reason} {violations}, not INVALID_ARGUMENT DATASET_INVALID"
    assert [f for f, _ in violations] == [field], f"expected one violation on {field}, got {violations}"
    listed = (await datasets.ListDatasets(pb.ListDatasetsRequest())).datasets
    assert list(listed) == [], f"a refused upload stored a dataset: {listed}"


async def test_a_surrogate_pair_escape_is_text_and_accepted(make_pg_server) -> None:
    """The check refuses only lone surrogates: a pair escape (an emoji, as json.dumps writes it) is one character."""
    datasets = stub(await make_pg_server())
    content = GOOD[pb.DATASET_KIND_TRAINING] + b'{"prompt": "smile \\ud83d\\ude00", "completion": "\\\\ud800"}\n'
    report = await datasets.ValidateDataset(pb.ValidateDatasetRequest(content=content,
                                                                      kind=pb.DATASET_KIND_TRAINING))
    assert report.example_count == 2, f"a valid surrogate pair (or an escaped backslash) was refused: {report}"
