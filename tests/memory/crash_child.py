"""Child process for the crash test: saves memories forever, printing each id once save returned."""

from __future__ import annotations

import sys
from pathlib import Path

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine


def main(data_dir: str) -> None:
    # Save the HNSW file often so the kill can land during a save of it too.
    engine = MemoryEngine(Path(data_dir), MemoryConfig(hnsw_save_every=7, text_commit_every=5))
    n = 0
    while True:
        batch = [
            MemoryDraft(content=f"Crash test note number {n + k}: the kiwi count is {(n + k) * 7}")
            for k in range(3)
        ]
        for memory in engine.save_many(batch):
            print(memory.id, flush=True)
        n += 3


if __name__ == "__main__":
    main(sys.argv[1])
