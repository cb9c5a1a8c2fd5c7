"""The error table, the status it produces, and settings validation."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from engine import errors as e
from server.errors import code_for, engine_error_status, internal_status
from server.settings import SettingsError, load_settings

EXPECTED = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.Aborted: grpc.StatusCode.ABORTED,
    e.DataLoss: grpc.StatusCode.DATA_LOSS,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
    e.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.Cancelled: grpc.StatusCode.CANCELLED,
    e.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}


def test_every_engine_error_class_has_a_status_code():
    assert set(e.EngineError.__subclasses__()) == set(EXPECTED), "a new error class needs a row here"
    for cls, code in EXPECTED.items():
        assert code_for(cls("SOME_REASON", "msg")) == code


def test_status_carries_one_error_info_and_field_violations():
    err = e.InvalidArgument(
        "BAD_THING", "bad thing", violations=[e.FieldViolation("spec.lora.rank", "must be 1..256")],
        metadata={"k": "v"},
    )
    status = engine_error_status(err)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and status.message == "bad thing"
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert (info.reason, info.domain, dict(info.metadata)) == ("BAD_THING", "learning-engine", {"k": "v"})
    assert [(v.field, v.description) for v in bad.field_violations] == [("spec.lora.rank", "must be 1..256")]
    assert internal_status().code == grpc.StatusCode.INTERNAL.value[0]


def test_reason_must_be_machine_readable():
    with pytest.raises(ValueError):
        e.NotFound("not found", "message")


def test_collector_raises_all_violations_at_once():
    issues = e.ViolationCollector()
    issues.check(False, "a", "first")
    issues.check(True, "b", "fine")
    issues.add("c", "second")
    with pytest.raises(e.InvalidArgument) as err:
        issues.raise_if_any("BAD", "bad request")
    assert [v.field for v in err.value.violations] == ["a", "c"]


def test_engine_errors_survive_pickling_whole():  # as when raised in a feedback worker process
    import pickle

    from engine.errors import FieldViolation, InvalidArgument

    error = InvalidArgument("INVALID_FEEDBACK", "bad batch", violations=[FieldViolation("events[1].kind", "unknown")],
                            metadata={"first_invalid_index": "1"})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is InvalidArgument and (copy.reason, copy.message, copy.violations, copy.metadata) == (
        error.reason, error.message, error.violations, error.metadata)


def test_settings_precedence_and_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "c.yaml"
    config.write_text("port: 6000\nmax_concurrent_jobs: 2\nlog_format: text\n")
    monkeypatch.delenv("LEARNING_ENGINE_CONFIG", raising=False)
    monkeypatch.setenv("LEARNING_ENGINE_PORT", "7000")
    settings = load_settings({"data_dir": tmp_path}, config_file=config)
    assert (settings.port, settings.max_concurrent_jobs, settings.data_dir) == (7000, 2, tmp_path)
    assert load_settings({"port": 8000}, config_file=config).port == 8000

    monkeypatch.setenv("LEARNING_ENGINE_MAX_CONCURRENT_JOBS", "0")
    monkeypatch.setenv("LEARNING_ENGINE_PORT", "70000")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "max_concurrent_jobs" in str(err.value) and "port" in str(err.value)
    monkeypatch.delenv("LEARNING_ENGINE_MAX_CONCURRENT_JOBS")
    monkeypatch.delenv("LEARNING_ENGINE_PORT")
    monkeypatch.setenv("LEARNING_ENGINE_EWC_LAMBDA_DEFAULT", "5000")
    with pytest.raises(SettingsError, match="ewc_lambda_default 5000"):
        load_settings()
    monkeypatch.delenv("LEARNING_ENGINE_EWC_LAMBDA_DEFAULT")
    monkeypatch.setenv("LEARNING_ENGINE_EWC_PRODUCT_LAMBDA_DEFAULT", "0.0001")
    with pytest.raises(SettingsError, match="ewc_product_lambda_default 0.0001"):
        load_settings()
    monkeypatch.delenv("LEARNING_ENGINE_EWC_PRODUCT_LAMBDA_DEFAULT")
    monkeypatch.setenv("LEARNING_ENGINE_EWC_FISHER_SPACE", "LORA_ENTRIES")
    with pytest.raises(SettingsError, match="ewc_fisher_space"):
        load_settings()
    monkeypatch.delenv("LEARNING_ENGINE_EWC_FISHER_SPACE")
    monkeypatch.setenv("LEARNING_ENGINE_BASE_PROTECTION_METHOD", "BASE_KL")
    monkeypatch.setenv("LEARNING_ENGINE_BASE_KL_WEIGHT", "0")
    with pytest.raises(SettingsError, match="BASE_KL needs base_kl_weight > 0"):
        load_settings()
    monkeypatch.setenv("LEARNING_ENGINE_BASE_KL_WEIGHT", "101")
    with pytest.raises(SettingsError, match="base_kl_weight"):
        load_settings()
    monkeypatch.setenv("LEARNING_ENGINE_BASE_KL_WEIGHT", "0.5")
    assert load_settings().training_defaults.base_protection.kl_weight == 0.5
    monkeypatch.setenv("LEARNING_ENGINE_BASE_PROTECTION_METHOD", "EWC_BASE")
    monkeypatch.setenv("LEARNING_ENGINE_BASE_EWC_LAMBDA", "0")
    with pytest.raises(SettingsError, match="EWC_BASE needs base_ewc_lambda > 0"):
        load_settings()
    monkeypatch.setenv("LEARNING_ENGINE_BASE_EWC_LAMBDA", "3")
    assert load_settings().training_defaults.base_protection.ewc_lambda == 3
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.yaml")


def test_credentials_come_from_secret_files_below_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "database_url").write_text("postgresql://learning:p%40ss@db:5432/learning")
    (secrets / "learning_engine_s3_secret_key").write_text("from-a-file")
    (secrets / "learning_engine_auth_tokens").write_text('[{"name": "ops", "role": "operator", "sha256": "' + "0" * 64
                                                         + '"}]')
    config = tmp_path / "c.yaml"
    config.write_text("s3_secret_key: from-yaml\n")
    for name in ("LEARNING_ENGINE_CONFIG", "DATABASE_URL", "LEARNING_ENGINE_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEARNING_ENGINE_SECRETS_DIR", str(secrets))
    settings = load_settings({"data_dir": tmp_path, "host": "0.0.0.0"}, config_file=config)
    assert settings.database_url == "postgresql://learning:p%40ss@db:5432/learning"
    assert settings.s3_secret_key.get_secret_value() == "from-a-file"  # above the YAML file
    assert [t.name for t in settings.auth_tokens] == ["ops"]
    monkeypatch.setenv("LEARNING_ENGINE_S3_SECRET_KEY", "from-the-environment")
    assert load_settings({"data_dir": tmp_path}).s3_secret_key.get_secret_value() == "from-the-environment"
    monkeypatch.setenv("LEARNING_ENGINE_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="secrets dir"):
        load_settings()


async def test_the_server_applies_its_thread_switch_interval(make_server) -> None:
    import sys

    client = await make_server(switch_interval_seconds=0.002)
    assert sys.getswitchinterval() == client.app.settings.switch_interval_seconds == 0.002


def test_implicit_signal_labels_override_the_defaults_kind_by_kind(monkeypatch: pytest.MonkeyPatch):
    from engine.feedback.events import FeedbackKind
    from server.engine_wiring import feedback_dataset_policy

    monkeypatch.delenv("LEARNING_ENGINE_CONFIG", raising=False)
    default = feedback_dataset_policy(load_settings())
    assert dict(default.implicit) == {
        FeedbackKind.COPY: True, FeedbackKind.TASK_COMPLETED: True, FeedbackKind.CLICK_THROUGH: True,
        FeedbackKind.REGENERATE: False,
    }
    assert default.dwell_desirable_seconds is None
    monkeypatch.setenv("LEARNING_ENGINE_FEEDBACK_KTO_IMPLICIT", '{"COPY": "ignore", "CLICK_THROUGH": "undesirable"}')
    monkeypatch.setenv("LEARNING_ENGINE_FEEDBACK_KTO_DWELL_DESIRABLE_SECONDS", "30")
    policy = feedback_dataset_policy(load_settings())
    assert dict(policy.implicit) == {
        FeedbackKind.TASK_COMPLETED: True, FeedbackKind.CLICK_THROUGH: False, FeedbackKind.REGENERATE: False,
    }
    assert policy.dwell_desirable_seconds == 30
    monkeypatch.setenv("LEARNING_ENGINE_FEEDBACK_KTO_IMPLICIT", '{"THUMBS_UP": "desirable"}')
    with pytest.raises(SettingsError, match="feedback_kto_implicit"):
        load_settings()


async def test_an_rpc_not_built_answers_unimplemented_with_error_info():
    """Generated base servicers raise NotImplementedError; the interceptor turns it into UNIMPLEMENTED."""
    from learning.v1 import fisher_pb2, fisher_pb2_grpc
    from server.errors import ErrorInterceptor
    from tests.server.conftest import error_details

    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    fisher_pb2_grpc.add_FisherServiceServicer_to_server(fisher_pb2_grpc.FisherServiceServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await fisher_pb2_grpc.FisherServiceStub(channel).GetFisherJob(fisher_pb2.GetFisherJobRequest())
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        info, _ = error_details(err.value)
        assert info.reason == "NOT_IMPLEMENTED"
    finally:
        await server.stop(0)


def test_a_tracker_that_cannot_log_stops_the_server_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]):
    from server.__main__ import main

    monkeypatch.setenv("LEARNING_ENGINE_TRAINING_TRACKERS", '["tensorboard", "wandb", "visdom"]')
    assert main(["--data-dir", str(tmp_path)]) == 2  # before anything starts
    message = capsys.readouterr().err
    assert "training_trackers" in message
    assert "tracker 'wandb' needs its library, which is not installed" in message
    assert "'visdom' is not a tracker accelerate supports (one of aim, " in message
    assert "'tensorboard'" not in message  # installed (the tracking extra, in dev)
    monkeypatch.setenv("LEARNING_ENGINE_TRAINING_TRACKERS", '["tensorboard"]')
    settings = load_settings({"data_dir": tmp_path})
    assert settings.training_trackers == ("tensorboard",) and settings.trackers_dir == tmp_path / "trackers"
