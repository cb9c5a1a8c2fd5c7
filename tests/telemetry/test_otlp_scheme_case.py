"""otlp_endpoint's scheme decides plaintext (http://) or TLS (https://). The settings accept the scheme in any case
(URL schemes are case-insensitive: urlsplit lowers it), so HTTP://collector:4317 must export in plaintext too,
not send TLS handshakes to a plaintext collector (no spans, not a word in the logs). Likewise an endpoint the
settings' parse reads as http:// once the blanks before it are gone."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter

from server import telemetry as server_telemetry
from server.settings import Settings


@pytest.fixture
def exporters(monkeypatch: pytest.MonkeyPatch) -> list[trace_exporter.OTLPSpanExporter]:
    """The span exporters configure_tracing makes, this process's tracer provider left alone."""
    made: list[trace_exporter.OTLPSpanExporter] = []

    class Recording(trace_exporter.OTLPSpanExporter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter", Recording)
    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)
    monkeypatch.setattr(server_telemetry, "_configured_endpoint", None)
    return made


@pytest.mark.parametrize("endpoint", ["HTTP://127.0.0.1:4317", "Http://127.0.0.1:4317", " http://127.0.0.1:4317"])
def test_an_http_scheme_in_any_case_exports_in_plaintext(endpoint: str, exporters, tmp_path) -> None:
    server_telemetry.configure_tracing(Settings(otlp_endpoint=endpoint, data_dir=tmp_path))  # accepted
    assert exporters, "no exporter was configured"
    assert exporters[0]._insecure, f"{endpoint!r} (plaintext) is exported over TLS"


def test_an_uppercase_https_scheme_exports_over_tls(exporters, tmp_path) -> None:
    server_telemetry.configure_tracing(Settings(otlp_endpoint="HTTPS://127.0.0.1:4317", data_dir=tmp_path))
    assert exporters and not exporters[0]._insecure, "HTTPS:// is exported in plaintext"
