"""The parts a conversation process (``spacebot.procs.channel``) is made of, each in-process.

- :mod:`.transcript`: what the conversation holds in memory (history, unanswered messages), the
  link to the memory process, and the one writer of the agent's own messages.
- :mod:`.streaming`: one streamed model call, shown to people while the model writes.
- :mod:`.delegation`: the branches and workers a conversation starts, their results and the
  delegation tools; :mod:`.roster` is their bookkeeping and status block.
- :mod:`.context_budget`: keeps the context under the model's window (starts compaction).

Each takes what it reads and what it may call in its constructor, never the channel itself.
Modules under ``spacebot.procs`` are processes; nothing here is one.
"""
