"""One transformers model built at a time in this process.

transformers builds a model (``from_pretrained``, ``from_config``) under process-wide patches: while one is built,
``PreTrainedModel.tie_weights`` is a no-op and torch's default dtype is the build's
(``transformers.modeling_utils.PreTrainedModel.get_init_context``). A second thread finishing its own build meanwhile
leaves its tied weights untied, on the meta device: its first ``.to(device)`` then fails with "Cannot copy out of
meta tensor" (seen with three online sessions starting at once). Every build in the engine holds :data:`BUILDING`.
"""

from __future__ import annotations

import threading

BUILDING = threading.RLock()

__all__ = ["BUILDING"]
