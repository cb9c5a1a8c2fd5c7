"""The catalogue of error reasons (learning.v1.ErrorReason) lists exactly the reasons the code raises.

The raise sites are found by parsing engine/, server/ and the Python client (tests/contracts/reason_sites.py).
"""

from __future__ import annotations

import functools
import re
import textwrap
from pathlib import Path

from learning.v1.error_reason_pb2 import ErrorReason
from tests.contracts.reason_sites import CATALOGUE_PREFIX, ROOT, scan

SOURCES = {ROOT: ["engine", "server"], ROOT / "clients" / "python": ["learning_engine"]}
PROTO = ROOT / "protos" / "learning" / "v1" / "error_reason.proto"
CATALOGUE = {name.removeprefix(CATALOGUE_PREFIX) for name, value in ErrorReason.items() if value}
# Values marked deprecated: no longer raised, kept because stored records (old jobs' failures) still carry them.
RETIRED = {v.name.removeprefix(CATALOGUE_PREFIX) for v in ErrorReason.DESCRIPTOR.values
           if v.GetOptions().deprecated}

# The only sites whose reason is not written where they are: each passes on the reason of an error
# raised (and scanned) elsewhere. Keyed by (function, reason expression) so that moving a module keeps them.
RELAYS = {
    ("JobManager._run", "exc.reason"): "a job's EngineError (Cancelled included) becomes its stored failure",
    ("RecordedOperation.record", "error.reason"): "a LoRA operation's EngineError becomes its recorded failure",
    ("AdapterRegistry.import_base_model_dir", "exc.reason"): "re-raises a base-model error under the upload's field",
    ("engine_error_status", "error.reason"): "the error interceptor turns any EngineError into its status",
    ("failure_to_pb", "f.reason"): "a stored job failure becomes the job's google.rpc.Status",
    ("operation_to_pb", "op.error.reason"): "a stored LoRA operation failure becomes its google.rpc.Status",
    ("run", "exc.reason"): "the CLI reports the reason of the SDK error it caught, as the server sent it",
    ("_count_interruption", "exc.reason"): "an online session's last store error, after as many in a row as it "
                                           "waits out, ends it with that error's reason",
    ("with_ewc_remedy", "exc.reason"): "a version's training data not known here, said to a job's EWC with what it "
                                       "can do instead, keeps its reason",
    ("Pipelines.check", "exc.reason"): "a golden suite file's bad line (load_suite's reason), named under the "
                                       "pipeline's field",
    ("_stopped", "exc.reason"): "feedback import reports the reason of the SDK error a batch met, its events named "
                                "by their file lines",
}



@functools.cache
def raised():
    return scan(SOURCES)


def _where(reason: str) -> str:
    return ", ".join(f"{s.path}:{s.line}" for s in raised().raised[reason][:3])


def test_every_raised_reason_is_in_the_catalogue() -> None:
    missing = {reason: _where(reason) for reason in set(raised().raised) - CATALOGUE}
    assert not missing, f"add these to {PROTO.relative_to(ROOT)} (then make protos): {missing}"


def test_every_catalogued_reason_is_raised() -> None:
    unused = sorted(CATALOGUE - RETIRED - set(raised().raised))
    revived = sorted(RETIRED & set(raised().raised))
    assert not revived, f"these are raised again; drop their deprecation: {revived}"
    assert not unused, f"nothing raises these; remove them from {PROTO.relative_to(ROOT)}: {unused}"


def test_every_reason_not_written_at_its_site_is_a_known_relay() -> None:
    found = {(site.function, site.expression): site for site in raised().dynamic}
    unknown = {f"{s.path}:{s.line} {s.function}: {s.expression}" for key, s in found.items() if key not in RELAYS}
    assert not unknown, f"reasons built at run time cannot be catalogued; raise a literal reason: {unknown}"
    stale = set(RELAYS) - set(found)
    assert not stale, f"these relays are gone; remove them from RELAYS: {stale}"
    assert not raised().missing_seeds, f"sinks moved; update reason_sites.SEEDS: {raised().missing_seeds}"


def test_every_value_says_when_it_is_raised() -> None:
    lines = PROTO.read_text().splitlines()
    value = re.compile(r"\s*(ERROR_REASON_\w+) = \d+( \[deprecated = true\])?;")
    values = [(i, m.group(1)) for i, line in enumerate(lines) if (m := value.match(line))]
    listed = {name.removeprefix(CATALOGUE_PREFIX) for _, name in values if name != "ERROR_REASON_UNSPECIFIED"}
    assert listed == CATALOGUE, "the generated code is stale: make protos"
    undocumented = [name for i, name in values if not lines[i - 1].strip().startswith("//")]
    assert not undocumented, f"each value needs a comment saying when it is raised: {undocumented}"


def test_the_scan_follows_helpers_and_closures_and_reports_relays(tmp_path: Path) -> None:
    package = tmp_path / "engine"
    package.mkdir()
    (package / "errors.py").write_text("class EngineError(Exception): ...\nclass NotFound(EngineError): ...\n")
    (package / "use.py").write_text(
        textwrap.dedent(
            """
            from engine.errors import NotFound
            from engine import errors as e

            GONE = "GONE"

            def _missing(reason, what):
                return NotFound(reason, what)

            def outer(reason):
                def inner():
                    raise _missing(reason, "x")
                inner()

            def raises(flag, exc):
                outer("FROM_CLOSURE")
                local = "LOCAL"
                e.NotFound(local, "m")
                e.NotFound(GONE, "m")
                raise NotFound("YES" if flag else "NO", "m") from exc

            def relays(exc):
                raise NotFound(exc.reason, "relayed")
            """
        )
    )
    result = scan({tmp_path: ["engine"]}, root=tmp_path)
    assert set(result.raised) == {"FROM_CLOSURE", "LOCAL", "GONE", "YES", "NO"}
    assert [(s.function, s.expression) for s in result.dynamic] == [("relays", "exc.reason")]
    assert ("engine.use", "_missing") in result.sinks and ("engine.use", "outer") in result.sinks
