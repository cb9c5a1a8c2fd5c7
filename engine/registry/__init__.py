"""The adapter registry: versions, immutable verified artifacts, lineage, import, retention.

``records``: version numbers and the persisted record; ``ports``: the artifact store and
serving-state interfaces; ``archive`` / ``peft_checks``: packing and validating PEFT
adapters; ``adapter_registry``: the registry itself; ``publishing``: the steps of one publish attempt.
"""

from engine.registry.adapter_registry import AdapterRegistry, BaseModelResolver
from engine.registry.ports import ArtifactStore, ServingRole, ServingState
from engine.registry.records import (
    AdapterEval,
    AdapterRecord,
    AdapterSource,
    PublishRequest,
    VersionNumber,
    parse_version,
)

__all__ = [
    "AdapterEval",
    "AdapterRecord",
    "AdapterRegistry",
    "AdapterSource",
    "ArtifactStore",
    "BaseModelResolver",
    "PublishRequest",
    "ServingRole",
    "ServingState",
    "VersionNumber",
    "parse_version",
]
