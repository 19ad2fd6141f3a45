"""The parts of ``cortex:<agent>``: the maintenance schedule, the knowledge block, supervision and
process history (``procs/cortex.py`` wires them together), and the memory-side queries they ask of
``memory:<agent>`` (``memory_side.py``, run inside the memory process). See docs/cortex.md."""
