"""Every message that crosses a Spacebot socket.

All wire types live here and nowhere else: the requests, events and replies of every process,
including the memory engine's values (``Memory``, ``RecallHit``, ``StoredMessage``,
``ConversationInfo`` …, which the memory process returns as they are) and the LLM layer's two
bus events (``CooldownNotice``, ``UsageReport``, with their ``Usage``). Two other type modules
stay, and hold nothing that travels on the bus:

* ``spacebot.llm.types`` — a model call inside one process: prompt messages, tool specs, stream
  events (``TextDelta`` … ``Stop``), ``Result``. Every process calls its models itself; none of
  these is ever sent to another process.
* ``spacebot.memory.types`` — the engine's own constants (``DEFAULT_IMPORTANCE``, recall source
  names); it also re-exports, under their old names too, the memory types that moved here.

They are frozen ``msgspec.Struct`` s encoded as msgpack; every struct that can stand in a union
has a ``tag`` unique across this module (``tests/runtime/test_codec.py`` checks it). Fields with a
fixed set of values are ``Literal`` s or enums, so a bad value is refused when the message is
decoded, and the sender gets ``bad_request`` naming the field. Unions are named by direction:

* ``ToSupervisor``  — a child process talking to the supervisor over the bus.
* ``ToChild``       — the supervisor talking to a child.
* ``Body``          — anything an :class:`Envelope` may carry (the union of all bus payloads).
* ``ControlRequest`` — ``spacebotctl`` talking to the control socket.
* ``EventBody``     — what is published on the events socket.

Frames on the bus (ZeroMQ multipart):

* child DEALER → broker ROUTER: ``[dst, payload]`` where ``payload`` is an encoded :class:`Envelope`.
  The broker sees ``[src_identity, dst, payload]`` and routes on ``dst`` without decoding.
* broker → child DEALER: ``[src, payload]``; the receiver checks ``envelope.src == src``.
* publish: ``[b"@pub", topic, payload]`` where ``payload`` is an encoded :class:`Event`.

Replies: an :class:`Ok` carries any msgpack-able value, decoded as plain data (the envelope
decoder cannot know what the requester expects). The requester names the type it expects —
``await bus.request(dst, body, returns=list[StoredMessage])`` — and gets it converted and checked
there, once; a reply that does not fit raises ``BusError`` with :attr:`ErrorCode.BAD_REPLY`.
"""

from __future__ import annotations

import enum
from typing import Any, Literal, get_args

import msgspec

# --------------------------------------------------------------------------------------------
# Shared vocabulary
# --------------------------------------------------------------------------------------------


class Kind(enum.StrEnum):
    """The role of a managed process (DESIGN.md §2)."""

    GATEWAY = "gateway"
    CHANNEL = "channel"
    BRANCH = "branch"
    WORKER = "worker"
    MEMORY = "memory"
    CORTEX = "cortex"


class ProcState(enum.StrEnum):
    """The one lifecycle vocabulary; legal moves are in ``spacebot.supervisor.table.TRANSITIONS``."""

    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    IDLE = "idle"
    STOPPING = "stopping"
    EXITED = "exited"
    FAILED = "failed"


class ErrorCode(enum.StrEnum):
    """Why a request failed."""

    NO_ROUTE = "no_route"
    """The destination id is not connected to the bus."""
    TIMEOUT = "timeout"
    """No reply arrived before the deadline."""
    BAD_REQUEST = "bad_request"
    """The request was understood but its content is invalid."""
    NOT_FOUND = "not_found"
    """The named object (process, memory, …) does not exist."""
    UNSUPPORTED = "unsupported"
    """The receiver does not handle this message type."""
    OVERLOADED = "overloaded"
    """A queue or high-water mark is full; the message was shed."""
    SPAWN_FAILED = "spawn_failed"
    """The zygote could not start the requested process."""
    CONFIG = "config"
    """The configuration is invalid."""
    INTERNAL = "internal"
    """An unexpected error inside the receiver; the log has details."""
    UNAVAILABLE = "unavailable"
    """The receiver is hibernating or shutting down; retry shortly (it will be started again)."""
    NOT_READY = "not_ready"
    """The receiver is connected but still starting (loading its state); retry shortly."""
    BAD_REPLY = "bad_reply"
    """The reply did not have the type the requester expects (a bug in one of the two)."""


TRANSIENT_CODES = frozenset(
    {ErrorCode.NO_ROUTE, ErrorCode.TIMEOUT, ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED, ErrorCode.NOT_READY}
)
"""Error codes that mean "not now": the same request may succeed if sent again after a short wait."""


SUPERVISOR_ID = "supervisor"
"""Bus id of the supervisor itself."""

BROKER_ID = "broker"
"""Source id of replies the broker makes on its own (``no_route``, ``overloaded``)."""

PUBLISH_FRAME = b"@pub"
"""Destination frame that asks the broker to forward a frame pair to the events socket."""


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------


class Ok(msgspec.Struct, frozen=True, tag="ok"):
    """A successful reply."""

    value: Any = None
    """The result: a struct from this module, a builtin, or ``None``. Decoded as plain data; the
    requester's ``request(..., returns=T)`` converts it to ``T``."""


class Err(msgspec.Struct, frozen=True, tag="err"):
    """A failed reply."""

    code: ErrorCode
    """What kind of failure this is."""
    message: str
    """A human-readable explanation naming what was wrong."""


# --------------------------------------------------------------------------------------------
# Child → supervisor
# --------------------------------------------------------------------------------------------


class Counters(msgspec.Struct, frozen=True, tag="counters"):
    """Frame-level error counters of one bus endpoint."""

    malformed: int = 0
    """Frames that could not be decoded or had the wrong shape."""
    oversized: int = 0
    """Frames larger than the configured cap."""
    unknown: int = 0
    """Well-formed messages of a type the receiver does not handle."""
    shed: int = 0
    """Messages dropped because a queue or high-water mark was full."""


class Ready(msgspec.Struct, frozen=True, tag="ready"):
    """Sent once by a child when its DEALER is connected and its loop is running."""

    pid: int
    """The child's OS process id."""
    kind: Kind
    """The child's kind, echoed for sanity checks."""


class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat"):
    """Sent periodically from the child's own event loop: proof the loop answers."""

    progress_at: float
    """Wall-clock time (epoch seconds) of the child's last real progress (token, tool call)."""
    busy: bool
    """Whether the child is working on something right now."""
    task: str = ""
    """One line describing the current task, shown in ``spacebotctl status``."""
    counters: Counters = Counters()
    """The child's bus error counters."""


RestartPolicy = Literal["always", "on-failure", "never"]
"""When a process is restarted after it exits (``[processes.<kind>] restart``)."""


class SpawnSpec(msgspec.Struct, frozen=True, tag="spawn"):
    """Ask the supervisor to start a process (from a child over the bus, or from ``spacebotctl``)."""

    kind: Kind
    """The role of the new process; budgets and restart policy come from it."""
    target: str
    """Dotted path ``package.module:function`` of the async entry point."""
    id: str = ""
    """The process id to use; empty means ``<kind>:<random>``."""
    args: dict[str, Any] = {}
    """Keyword arguments handed to the entry point (msgpack-able values only)."""
    task: str = ""
    """Initial one-line task description."""
    wait_ready: bool = True
    """Reply only once the child has sent :class:`Ready` (or failed to)."""
    restart: RestartPolicy | Literal[""] = ""
    """Override of the kind's restart policy (``always``/``on-failure``/``never``); empty keeps it."""


class Spawned(msgspec.Struct, frozen=True, tag="spawned"):
    """Reply to :class:`SpawnSpec`."""

    id: str
    """The id of the new process."""
    pid: int
    """Its OS pid."""
    state: ProcState
    """Its state when the reply was made."""


class SyncEvents(msgspec.Struct, frozen=True, tag="sync_events"):
    """Ask the supervisor to publish ``sys.sync.<nonce>`` so a subscriber knows it is connected."""

    nonce: str
    """A random token chosen by the subscriber."""


class SecretsGet(msgspec.Struct, frozen=True, tag="secrets_get"):
    """Ask the supervisor for secret values; replies ``Ok(dict[str, str])`` (name → value).

    Answered only with the secrets the asking process's kind uses
    (``spacebot/supervisor/secrets_service.py``); any other or unknown name fails the whole request
    with an ``Err`` naming it. Values travel only this way: never in the environment or a spawn request.
    """

    names: list[str]
    """The secret names wanted, as ``secret:NAME`` and ``[delegates] secrets`` write them."""


class Ping(msgspec.Struct, frozen=True, tag="ping"):
    """A request answered with ``Ok(payload)`` by any bus endpoint; used for liveness and benchmarks."""

    payload: bytes = b""
    """Opaque bytes echoed back."""


class Echo(msgspec.Struct, frozen=True, tag="echo"):
    """A one-way message that test and benchmark children count or echo."""

    seq: int
    """Sequence number chosen by the sender."""
    payload: bytes = b""
    """Opaque bytes."""


# --------------------------------------------------------------------------------------------
# Supervisor → child
# --------------------------------------------------------------------------------------------


class Stop(msgspec.Struct, frozen=True, tag="stop"):
    """Ask a child to finish its work and exit cleanly."""

    reason: str = ""
    """Why the supervisor wants it to stop (shutdown, hibernate, operator)."""


ToSupervisor = Ready | Heartbeat | SpawnSpec | SyncEvents | SecretsGet | Ping
"""Messages a child sends to the supervisor (and ``KillRequest`` for a process it started;
``StatusRequest``, answered for ``gateway:api`` only)."""

ToChild = Stop | Ping | Echo
"""Messages the supervisor or other processes send to a child."""


class Envelope(msgspec.Struct, frozen=True, array_like=True):
    """The one frame format on the bus."""

    src: str
    """Bus id of the sender (checked against the transport identity by the receiver)."""
    dst: str
    """Bus id of the receiver."""
    id: int
    """Request id, unique per sender; 0 for a one-way message that wants no reply."""
    reply_to: int
    """The request id this envelope answers; 0 when it is not a reply."""
    body: Body
    """The message itself."""


# --------------------------------------------------------------------------------------------
# Control socket (spacebotctl ⇄ supervisor)
# --------------------------------------------------------------------------------------------


class StatusRequest(msgspec.Struct, frozen=True, tag="status"):
    """List every managed process with its live metrics."""


class TreeRequest(msgspec.Struct, frozen=True, tag="tree"):
    """The process tree: supervisor, zygote, children by logical parent, and their OS descendants."""


class KillRequest(msgspec.Struct, frozen=True, tag="kill"):
    """Kill a process and its whole tree (OS descendants and logical children)."""

    id: str
    """The process id to kill."""
    signal: str = "TERM"
    """First signal to send (``TERM``, ``INT``, ``KILL``, …); escalation to SIGKILL follows."""
    grace: float | None = None
    """Seconds to wait after the first signal; ``None`` uses the kind's budget."""
    restart: bool = False
    """Restart it afterwards (per its policy) instead of leaving it exited."""


class ReloadRequest(msgspec.Struct, frozen=True, tag="reload"):
    """Re-read the configuration file (same as SIGHUP)."""


class ReloadEffect(enum.StrEnum):
    """When a changed configuration key takes effect after a reload."""

    APPLIED = "applied"
    """In effect now: the supervisor reads it each time it is needed."""
    NEW_PROCESSES = "new processes"
    """Read by each process when it starts: processes started from now on use it; running ones
    keep the value they started with until they exit or are restarted."""
    NEEDS_RESTART = "needs restart"
    """Read once, when the service (or the long-lived process named in the note) starts."""


class ConfigChange(msgspec.Struct, frozen=True):
    """One configuration key whose value a reload changed (values are not sent: some are secrets)."""

    key: str
    """Dotted key, e.g. ``webchat.port`` or ``processes.worker.grace``."""
    effect: ReloadEffect
    """Whether the new value is in effect."""
    note: str = ""
    """Where it takes effect, or what to restart for it."""


class ReloadReport(msgspec.Struct, frozen=True, tag="reload_report"):
    """Reply to :class:`ReloadRequest`: what changed and when each change takes effect."""

    source: str
    """The file that was read (empty: defaults and the environment only)."""
    changes: list[ConfigChange] = []
    """One entry per changed key, sorted by key; empty when nothing changed."""


class ShutdownRequest(msgspec.Struct, frozen=True, tag="shutdown"):
    """Stop every process in dependency order and exit (same as SIGTERM)."""


class CronRequest(msgspec.Struct, frozen=True, tag="cron"):
    """A cron command for one agent, forwarded by the supervisor to ``cortex:<agent>`` (``spacebot
    cron``); the reply is the cortex's."""

    agent: str
    """The agent whose jobs are meant."""
    command: CronCommand
    """What to do."""


class HistoryRequest(msgspec.Struct, frozen=True, tag="history"):
    """An agent's latest process runs (``spacebotctl history``), forwarded by the supervisor to
    ``cortex:<agent>``; replies ``list[ProcessRun]``, newest first."""

    agent: str = "main"
    """Whose processes."""
    limit: int = 20
    """Most rows."""
    kind: str = ""
    """Only this kind (``worker``, ``maintenance``…); empty: every kind."""
    proc_id: str = ""
    """Only this process; empty: every process."""


ControlRequest = (
    StatusRequest
    | TreeRequest
    | KillRequest
    | ReloadRequest
    | ShutdownRequest
    | SpawnSpec
    | SyncEvents
    | CronRequest
    | HistoryRequest
)
"""Requests accepted on the control socket."""


class ControlFrame(msgspec.Struct, frozen=True, array_like=True):
    """One control request with its id."""

    id: int
    """Request id chosen by the client, echoed in the reply."""
    request: ControlRequest
    """The request."""


class ControlReply(msgspec.Struct, frozen=True, array_like=True):
    """The answer to a :class:`ControlFrame`."""

    id: int
    """The request id this answers."""
    result: Ok | Err
    """The outcome."""


class ProcessInfo(msgspec.Struct, frozen=True, tag="process_info"):
    """One row of ``spacebotctl status``."""

    id: str
    """Process id on the bus."""
    kind: str
    """Kind (``zygote`` for the fork server)."""
    pid: int
    """OS pid, 0 when not running."""
    state: ProcState
    """Lifecycle state."""
    uptime_s: float
    """Seconds since it was started (0 when not running)."""
    cpu_percent: float
    """CPU use since the previous status call, in percent of one core."""
    rss_mb: float
    """Resident set size in MiB."""
    uss_mb: float
    """Unique set size in MiB (memory freed if it exited)."""
    heartbeat_age_s: float | None
    """Seconds since the last heartbeat, ``None`` before the first."""
    progress_age_s: float | None
    """Seconds since the last reported progress, ``None`` before the first."""
    parent: str
    """Id of the process that asked for it (``supervisor`` for core processes)."""
    task: str
    """Current one-line task."""
    restarts: int
    """How many times it has been restarted."""
    exit_code: int | None
    """Last exit code (negative = killed by that signal), ``None`` if it never exited."""
    frame_errors: int
    """Bus frames it reported as malformed, oversized or unknown."""
    hibernated: bool = False
    """An exited conversation that ended itself when idle (not a crash): its next message starts it."""


class StatusReply(msgspec.Struct, frozen=True, tag="status_reply"):
    """Reply to :class:`StatusRequest`."""

    supervisor_pid: int
    """The supervisor's pid."""
    uptime_s: float
    """Seconds since the supervisor started."""
    runtime_dir: str
    """Where the sockets live."""
    processes: list[ProcessInfo]
    """One entry per managed process."""
    ready: bool
    """Whether start-up finished (zygote and core processes up); spawns wait until it has."""
    broker: Counters
    """The broker's own frame counters."""
    routed: int
    """Frames routed since start."""
    sandbox: dict[str, Any] = {}
    """How tools run programs: ``mode`` (native/python), ``landlock_abi``, ``landlock`` (applied)."""


class TreeNode(msgspec.Struct, frozen=True, tag="tree_node"):
    """A node of the process tree."""

    id: str
    """Process id, or ``pid:<n>`` for an unmanaged OS descendant."""
    pid: int
    """OS pid."""
    state: str
    """Lifecycle state or the OS status of an unmanaged descendant."""
    command: str
    """Kind for managed processes, command line for OS descendants."""
    children: list[TreeNode] = []
    """Sub-nodes."""


class KilledProc(msgspec.Struct, frozen=True, tag="killed_proc"):
    """One process ended by a kill."""

    pid: int
    """OS pid."""
    name: str
    """Process id for managed processes, the command name otherwise."""
    how: Literal["exited", "signal", "sigkill"]
    """``exited`` (before any signal), ``signal`` (the first signal), ``sigkill`` (escalated)."""


class KillReport(msgspec.Struct, frozen=True, tag="kill_report"):
    """What a kill did."""

    id: str
    """The process that was asked to die."""
    killed: list[KilledProc]
    """Every process that died, the whole tree."""
    survivors: list[int]
    """Pids still alive afterwards (should be empty; non-empty means a kernel-level problem)."""


# --------------------------------------------------------------------------------------------
# Events (PUB socket)
# --------------------------------------------------------------------------------------------


class StateChanged(msgspec.Struct, frozen=True, tag="state"):
    """A process moved between lifecycle states."""

    id: str
    """Process id."""
    kind: str
    """Process kind."""
    pid: int
    """OS pid (0 if none)."""
    old: ProcState
    """Previous state."""
    new: ProcState
    """New state."""
    reason: str = ""
    """Why (``ready``, ``exit code 1``, ``heartbeat missed``, ``flapping``, …)."""


Budget = Literal["ready", "heartbeat", "progress", "wall_clock"]
"""A liveness budget a process can run out of (``ready``: it never said it was ready)."""


class ProcessHung(msgspec.Struct, frozen=True, tag="hung"):
    """The supervisor found a process alive but stuck past its budget and is killing it."""

    id: str
    """Process id."""
    budget: Budget
    """Which budget ran out: ``ready``, ``heartbeat``, ``progress`` or ``wall_clock``."""
    seconds: float
    """How long it went without."""


class ProcessExited(msgspec.Struct, frozen=True, tag="exit"):
    """A process ended."""

    id: str
    """Process id."""
    pid: int
    """OS pid."""
    exit_code: int | None
    """Exit status; negative = killed by that signal; ``None`` if unknown."""
    restart_in: float | None
    """Seconds until the restart, ``None`` when it will not be restarted."""


class ProcessKilled(msgspec.Struct, frozen=True, tag="killed"):
    """A kill escalation finished."""

    report: KillReport
    """What died."""


class FramesDropped(msgspec.Struct, frozen=True, tag="dropped"):
    """The broker or a child dropped frames (throttled: at most one event per second per source)."""

    source: str
    """Who dropped them."""
    counters: Counters
    """The counters after the drop."""
    last_reason: str
    """The last reason seen, naming the offending peer."""


class ConfigReloaded(msgspec.Struct, frozen=True, tag="reloaded"):
    """The configuration was re-read."""

    ok: bool
    """Whether the new configuration was accepted."""
    message: str = ""
    """The error, when it was not."""
    changes: list[ConfigChange] = []
    """When it was: one entry per changed key and when it takes effect."""


class Notice(msgspec.Struct, frozen=True, tag="notice"):
    """A free-form event published by a process (status lines, progress)."""

    text: str
    """What happened."""
    fields: dict[str, Any] = {}
    """Structured details."""


class Usage(msgspec.Struct, frozen=True):
    """Token counts of one model call."""

    input_tokens: int = 0
    """Prompt tokens billed at the full rate (excludes cached)."""
    output_tokens: int = 0
    """Generated tokens."""
    cached_tokens: int = 0
    """Prompt tokens served from the provider's cache."""


class CooldownNotice(msgspec.Struct, frozen=True, tag="llm_cooldown"):
    """A model was rate-limited or overloaded; every process of the agent should skip it until ``until``."""

    model: str
    """Model id ``provider/model``."""
    until: float
    """Wall-clock epoch seconds when the model may be used again."""
    reason: str
    """Why (e.g. ``rate_limited status=429``)."""


class UsageReport(msgspec.Struct, frozen=True, tag="llm_usage"):
    """Tokens and cost of one finished model call."""

    model: str
    """Model id that answered."""
    process: str
    """Process type that made the call (channel, worker, ...)."""
    task: str | None
    """Task type if any."""
    usage: Usage
    """Token counts."""
    cost_usd: float
    """Estimated cost in US dollars."""
    latency_ms: float
    """Wall time of the successful attempt."""
    fallbacks: list[str] = []
    """Models abandoned before this one."""


EventBody = (
    StateChanged
    | ProcessHung
    | ProcessExited
    | ProcessKilled
    | FramesDropped
    | ConfigReloaded
    | Notice
    | Echo
    | CooldownNotice
    | UsageReport
)
"""Everything that may be published on the events socket."""


class Event(msgspec.Struct, frozen=True, array_like=True):
    """One published event."""

    topic: str
    """Dotted topic, e.g. ``proc.worker.worker:ab12.state``."""
    src: str
    """Publisher id."""
    ts: float
    """Wall-clock time of publication, epoch seconds."""
    body: EventBody
    """The event."""


# --------------------------------------------------------------------------------------------
# Supervisor ⇄ zygote (length-prefixed msgpack over a private socketpair)
# --------------------------------------------------------------------------------------------


class ZygoteHello(msgspec.Struct, frozen=True, tag="z_hello"):
    """The zygote finished its imports and is ready to fork."""

    pid: int
    """The zygote's pid."""
    preload_s: float
    """Seconds spent importing ``preload_first`` (``preload`` follows after the hello)."""
    threads: int
    """Threads alive at fork time (must be 1: forking a threaded process is unsafe)."""
    failed_imports: list[str]
    """Preload modules that could not be imported, with the error."""


class ZygoteSpawn(msgspec.Struct, frozen=True, tag="z_spawn"):
    """Fork a child."""

    spec: SpawnSpec
    """What to run (its ``id`` is always set here)."""
    config: bytes
    """The current configuration, msgpack-encoded."""
    runtime_dir: str
    """Where the sockets are."""
    supervisor_pid: int
    """The supervisor's pid: the child dies when it does."""
    bus_key: str = ""
    """The child's bus password (username: ``spec.id``); see ``spacebot.supervisor.auth``."""


class ZygotePreloadRest(msgspec.Struct, frozen=True, tag="z_preload_rest"):
    """Import ``preload`` now, one module at a time while no fork request waits (sent once the
    processes a start needs first have been forked, so they never wait behind a model SDK)."""


class ZygoteForked(msgspec.Struct, frozen=True, tag="z_forked"):
    """A child was forked."""

    id: str
    """Its process id."""
    pid: int
    """Its pid."""


class ZygoteFailed(msgspec.Struct, frozen=True, tag="z_failed"):
    """A fork failed."""

    id: str
    """The process id that could not be started."""
    error: str
    """Why."""


class ZygoteExit(msgspec.Struct, frozen=True, tag="z_exit"):
    """A child of the zygote ended and was reaped."""

    pid: int
    """Its pid."""
    exit_code: int
    """Exit status; negative = killed by that signal."""


ToZygote = ZygoteSpawn | ZygotePreloadRest
"""What the supervisor sends to the zygote."""

FromZygote = ZygoteHello | ZygoteForked | ZygoteFailed | ZygoteExit
"""What the zygote sends to the supervisor."""


# --------------------------------------------------------------------------------------------
# Memory values: what the memory process stores and returns (its engine uses them in-process too)
#
# Untagged: no union holds them (a reply names its type with ``returns=``), and the tag field
# (``type``) would clash with the field of that name in ``MemoryDraft`` and ``Memory``.
# --------------------------------------------------------------------------------------------


class MemoryType(enum.StrEnum):
    """What kind of thing a memory records."""

    FACT = "fact"
    PREFERENCE = "preference"
    DECISION = "decision"
    IDENTITY = "identity"
    EVENT = "event"
    OBSERVATION = "observation"
    GOAL = "goal"
    TODO = "todo"


class Relation(enum.StrEnum):
    """The kind of an association between two memories."""

    RELATED_TO = "related_to"
    UPDATES = "updates"
    CONTRADICTS = "contradicts"
    CAUSED_BY = "caused_by"
    PART_OF = "part_of"


class ReplyState(enum.StrEnum):
    """Whether an inbound message has been dealt with."""

    PENDING = "pending"
    ANSWERED = "answered"
    SKIPPED = "skipped"
    NONE = "none"
    """Outbound or system messages, which expect no reply."""


RecallMode = Literal["hybrid", "recent", "important", "typed"]
"""How ``MemRecall`` ranks: fused search, newest, most important, or by type."""

Role = Literal["user", "assistant", "system"]
"""Who said a transcript message."""


class MemoryDraft(msgspec.Struct, frozen=True, kw_only=True):
    """A memory to be saved."""

    content: str
    """The text of the memory (at most ``max_content_bytes``)."""
    type: MemoryType = MemoryType.FACT
    """Its kind."""
    importance: float | None = None
    """0..1; ``None`` takes the type's default."""
    source: str = ""
    """Where it came from (``channel``, ``ingest:<file>``, ``branch``...)."""
    channel: str | None = None
    """The conversation it belongs to, if any."""
    metadata: dict[str, Any] = {}
    """Free JSON; ``date`` and ``speaker`` are also indexed with the content."""
    follows: int | None = None
    """Id of the memory it comes right after in a sequence (a transcript, a document); recall scores
    a memory together with its sequence neighbours."""
    created_at: float | None = None
    """Unix time it happened; ``None`` = now."""


class Memory(msgspec.Struct, frozen=True, kw_only=True):
    """A stored memory."""

    id: int
    """Unique, increasing id."""
    content: str
    """The text."""
    type: MemoryType
    """Its kind."""
    importance: float
    """0..1, lowered by decay and by newer duplicates."""
    created_at: float
    """Unix time it was saved (or happened)."""
    updated_at: float
    """Unix time of the last change."""
    last_accessed_at: float
    """Unix time it was last returned by recall."""
    access_count: int
    """How many times recall returned it."""
    source: str
    """Where it came from."""
    channel: str | None
    """The conversation it belongs to, if any."""
    forgotten: bool
    """Pruned, merged or forgotten: kept in the store but never recalled."""
    metadata: dict[str, Any]
    """Free JSON."""
    follows: int | None
    """The memory before it in its sequence, if any."""


class Association(msgspec.Struct, frozen=True, kw_only=True):
    """A weighted, directed edge between two memories (unique per source, target, relation)."""

    source_id: int
    """Edge start."""
    target_id: int
    """Edge end."""
    relation: Relation
    """Edge kind."""
    weight: float
    """0..1 strength."""
    created_at: float
    """Unix time it was made."""


class RecallHit(msgspec.Struct, frozen=True, kw_only=True):
    """One recalled memory with how each source ranked it."""

    memory: Memory
    """The memory."""
    score: float
    """The sort key: for one hybrid query the reranker's probability (0 for hits past its depth),
    or the RRF score when it is off or the sources are restricted; for several queries the RRF of
    their rankings; for the other modes their own order."""
    ranks: dict[str, int] = {}
    """1-based rank in each source list that contained it (``vector``, ``bm25``, ``vector_ctx``,
    ``bm25_ctx``, ``graph``, and ``person_vector`` / ``person_bm25_ctx`` when the query names a
    person; ``rerank`` when the reranker ordered it; ``query_N`` per query of several)."""
    scores: dict[str, float] = {}
    """Raw score in each source list: cosine, BM25, context scores, graph weight."""


class ConversationInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation on some platform, as the memory process records it."""

    id: str
    """Spacebot's conversation id (e.g. ``discord:123:456``)."""
    platform: str
    """``discord``, ``slack``, ``telegram``, ``twitch``, ``web``..."""
    display_name: str
    """Human name (``#general``, a DM partner)."""
    last_activity_at: float
    """Unix time of its last message."""
    created_at: float
    """Unix time it was first seen."""


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One transcript entry, as stored by the memory process."""

    id: int
    """Store id, increasing in arrival order."""
    channel_id: str
    """The conversation."""
    platform_message_id: str | None
    """The platform's id; appending the same one twice stores it once."""
    author_id: str
    """Platform user id (or the agent's id)."""
    author_name: str
    """Display name at the time."""
    role: Role
    """``user``, ``assistant`` or ``system``."""
    text: str
    """Message text."""
    attachments: list[dict[str, Any]]
    """Attachment metadata (name, url, mime, size...)."""
    created_at: float
    """Unix time it was sent."""
    reply_state: ReplyState
    """Pending/answered/skipped for inbound messages; ``none`` otherwise."""
    replied_at: float | None
    """Unix time its reply state last changed."""
    reactions: list[str] = []
    """Emoji reactions the agent added, in order."""
    shown: Shown | None = None
    """For an agent's reply: its card and the thread it opens, so a gateway that posts it later
    (it was down when the reply was stored) shows it as it was meant; ``None`` for plain text."""


class MessageHit(msgspec.Struct, frozen=True, kw_only=True):
    """A transcript search result."""

    message: StoredMessage
    """The message."""
    score: float
    """BM25 score."""
    channel_name: str
    """Display name of its channel."""


class MaintenanceReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a maintenance operation changed."""

    examined: int
    """Memories looked at."""
    changed: int
    """Memories decayed, pruned or merged away."""


class IngestReport(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of ingesting one file."""

    file_name: str
    """Name inside the ingest folder."""
    sha256: str
    """Content hash that keys the progress."""
    chunks_total: int
    """Chunks the file splits into."""
    chunks_done: int
    """Chunks finished (including ones finished by an earlier, interrupted run)."""
    memories_created: int
    """Memories saved by this run."""
    status: Literal["done", "failed"]
    """``done``: the file was removed; ``failed``: it was kept."""
    error: str | None = None
    """Why it failed."""


class PendingChannel(msgspec.Struct, frozen=True):
    """One conversation with inbound messages still ``pending``."""

    channel: str
    """Conversation id."""
    oldest_at: float
    """When its oldest unanswered message was said (epoch seconds)."""
    count: int
    """How many messages wait."""


# --------------------------------------------------------------------------------------------
# Anyone → memory:<agent> (replies carry the memory values above)
# --------------------------------------------------------------------------------------------


class MemSave(msgspec.Struct, frozen=True, tag="mem_save"):
    """Save memories (linked to near neighbours); replies ``list[Memory]``."""

    drafts: list[MemoryDraft]
    """What to save, in order."""


class MemGet(msgspec.Struct, frozen=True, tag="mem_get"):
    """One memory by id; replies ``Memory``."""

    id: int
    """The memory id."""


class MemRecall(msgspec.Struct, frozen=True, tag="mem_recall"):
    """Find memories; replies ``list[RecallHit]`` with per-source ranks and scores."""

    query: str = ""
    """What to look for (ignored by ``recent`` and ``important``)."""
    mode: RecallMode = "hybrid"
    """``hybrid``, ``recent``, ``important`` or ``typed``."""
    limit: int = 10
    """Most hits returned."""
    types: list[MemoryType] | None = None
    """Only these memory types."""
    channel: str | None = None
    """Only memories of this conversation."""
    queries: list[str] = []
    """Up to four further phrasings of ``query`` (hybrid): each is recalled too and the rankings
    fused (a branch model asks for the concrete things an abstract question is about)."""
    as_of: float | None = None
    """Unix time the query's relative dates count from (with ``resolve_dates``); default now."""


class MemForget(msgspec.Struct, frozen=True, tag="mem_forget"):
    """Mark memories forgotten; replies the number changed."""

    ids: list[int]
    """Memory ids."""


class MemAssociate(msgspec.Struct, frozen=True, tag="mem_associate"):
    """Create or re-weight an edge; replies ``Association``."""

    source: int
    """From this memory."""
    target: int
    """To this memory."""
    relation: Relation
    """``related_to``, ``updates``, ``contradicts``, ``caused_by`` or ``part_of``."""
    weight: float = 1.0
    """Edge weight."""


class MemAssociations(msgspec.Struct, frozen=True, tag="mem_associations"):
    """Edges touching a memory; replies ``list[Association]``."""

    id: int
    """The memory id."""


class MemMaintain(msgspec.Struct, frozen=True, tag="mem_maintain"):
    """Run one maintenance operation; replies ``MaintenanceReport``."""

    op: Literal["decay", "prune", "merge"]
    """``decay``, ``prune`` or ``merge``."""


class MemIngest(msgspec.Struct, frozen=True, tag="mem_ingest"):
    """Ingest what is in the agent's ingest folder now; replies ``list[IngestReport]``."""


class MemChanges(msgspec.Struct, frozen=True, tag="mem_changes"):
    """How far the memories have changed (a counter, no database work); replies ``MemoryChanges``."""


class MemoryChanges(msgspec.Struct, frozen=True, kw_only=True):
    """Reply to :class:`MemChanges`: counters the cortex compares to know whether anything changed."""

    epoch: float
    """When this memory process started: counters restart with it, so a new epoch means "changed"."""
    generation: int
    """Writes that changed memories or their edges (saves, forgets, maintenance, associations, ingest)."""
    outside: int
    """Those of ``generation`` asked by anyone but the agent's cortex (the cortex's own maintenance
    does not make maintenance due again)."""


class MemAssociatePass(msgspec.Struct, frozen=True, tag="mem_associate_pass"):
    """Link memories saved after ``after_id`` with their near neighbours; replies ``AssociationReport``."""

    after_id: int
    """Only memories with a larger id (the previous pass's ``last_id``)."""
    limit: int
    """Most memories examined in this pass (the rest wait for the next)."""
    threshold: float
    """Cosine from which a neighbour gets a ``related_to`` edge."""
    per_memory: int = 5
    """Most new edges per memory."""


class AssociationReport(msgspec.Struct, frozen=True, kw_only=True):
    """What an association pass did."""

    examined: int
    """Memories looked at."""
    added: int
    """Edges created (``related_to`` and ``updates``)."""
    last_id: int
    """Largest id examined (the next pass starts after it); unchanged when none was."""
    remaining: bool
    """More memories wait than the pass's limit allowed."""


class MemKnowledge(msgspec.Struct, frozen=True, tag="mem_knowledge"):
    """The most important memories of each type, without counting as an access; replies
    ``KnowledgeSnapshot``."""

    types: list[MemoryType]
    """Which types, in the order they are wanted."""
    per_type: int
    """Most memories returned per type."""


class KnowledgeSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Reply to :class:`MemKnowledge`."""

    counts: dict[str, int]
    """Active memories per type (all of them, not only those returned)."""
    memories: list[Memory]
    """Per type, by importance then recency (highest first)."""


class ProcessRun(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``process_runs``: a process's life from start to exit, or one maintenance run."""

    proc_id: str
    """The process (``worker:ab12``), or the process that did the run (``cortex:main``)."""
    kind: str
    """Process kind (``worker``…), or ``maintenance`` for a cortex maintenance run."""
    started_at: float
    """Unix time it started."""
    ended_at: float | None = None
    """Unix time it ended (``None``: still running when recorded)."""
    exit_code: int | None = None
    """Exit code (negative: killed by that signal); for a maintenance run 0 = ok, 1 = failed."""
    detail: dict[str, Any] = {}
    """What else is known: parent, restarts, kill or hang reason; a maintenance run's counts."""
    id: int = 0
    """Row id (0 in a request to record it)."""


class RunsRecord(msgspec.Struct, frozen=True, tag="runs_record"):
    """Store finished runs in ``process_runs``; replies the number stored."""

    runs: list[ProcessRun]
    """What to store."""
    keep: int = 0
    """Afterwards keep only the newest ``keep`` rows of the table (0: keep all)."""


class RunsList(msgspec.Struct, frozen=True, tag="runs_list"):
    """The latest runs, newest first; replies ``list[ProcessRun]``."""

    limit: int = 20
    """Most rows."""
    kind: str = ""
    """Only this kind (``maintenance``, ``worker``…); empty: every kind."""
    proc_id: str = ""
    """Only this process id; empty: every process."""


class TranscriptAppend(msgspec.Struct, frozen=True, tag="tr_append"):
    """Persist one conversation message (idempotent on the platform message id); replies ``StoredMessage``."""

    channel: str
    """Conversation id."""
    text: str
    """Message text."""
    author_id: str
    """Platform id of the author."""
    author_name: str
    """Display name of the author."""
    role: Role = "user"
    """``user``, ``assistant`` or ``system``."""
    platform_message_id: str | None = None
    """The platform's id of the message, for de-duplication."""
    attachments: list[dict[str, Any]] | None = None
    """Attachment metadata."""
    created_at: float | None = None
    """When it was said (epoch seconds); ``None`` = now."""
    reply_state: ReplyState | None = None
    """Initial reply state (inbound user messages start ``pending``)."""
    answers: list[int] = []
    """Stored ids of inbound messages this message deals with: they move to ``answers_state`` in the
    same transaction, so a reply is never recorded without its question being marked, or vice versa."""
    answers_state: ReplyState = ReplyState.ANSWERED
    """State given to ``answers`` (``answered``, or ``skipped`` for an error notice)."""
    shown: Shown | None = None
    """How a reply is shown beyond its text (its card, the thread it opens), stored with it."""


class TranscriptEdit(msgspec.Struct, frozen=True, tag="tr_edit"):
    """A person edited or deleted a platform message; replies ``StoredMessage`` (``None`` when
    no message with that platform id was stored)."""

    channel: str
    """Conversation id."""
    platform_message_id: str
    """The platform's id of the message."""
    text: str | None
    """The new text; ``None``: the message was deleted."""


class TranscriptPage(msgspec.Struct, frozen=True, tag="tr_page"):
    """Messages of one conversation, newest last; replies ``list[StoredMessage]``."""

    channel: str
    """Conversation id."""
    limit: int = 50
    """Most messages."""
    before_id: int | None = None
    """Only messages older than this id (paging backwards)."""


class TranscriptMarkReply(msgspec.Struct, frozen=True, tag="tr_mark"):
    """Set a message's reply state; replies ``StoredMessage``."""

    message_id: int
    """The stored message id."""
    state: ReplyState
    """New state."""


class TranscriptUnanswered(msgspec.Struct, frozen=True, tag="tr_unanswered"):
    """Inbound messages still waiting for an answer; replies ``list[StoredMessage]``."""

    channel: str | None = None
    """One conversation, or all."""
    limit: int = 100
    """Most messages."""


class TranscriptPendingChannels(msgspec.Struct, frozen=True, tag="tr_pending_channels"):
    """Conversations that still owe an answer, oldest first; replies ``list[PendingChannel]``."""

    limit: int = 1000
    """Most conversations."""


class TranscriptSearch(msgspec.Struct, frozen=True, tag="tr_search"):
    """Full-text search across conversations; replies ``list[MessageHit]``."""

    query: str
    """Words to find."""
    limit: int = 20
    """Most hits."""
    channel: str | None = None
    """Only this conversation."""
    exclude_channel: str | None = None
    """Every conversation but this one."""


class ChannelUpsert(msgspec.Struct, frozen=True, tag="ch_upsert"):
    """Register a conversation or rename it; replies ``ConversationInfo``."""

    id: str
    """Conversation id."""
    platform: str
    """Platform name."""
    display_name: str
    """Human name."""


class ChannelList(msgspec.Struct, frozen=True, tag="ch_list"):
    """Every known conversation with its name; replies ``list[ConversationInfo]``."""

    platform: str | None = None
    """Only conversations of this platform."""


class TranscriptReact(msgspec.Struct, frozen=True, tag="tr_react"):
    """Add an emoji reaction to a stored message (once per emoji); replies ``StoredMessage``."""

    message_id: int
    """The stored message id."""
    emoji: str
    """The reaction (one emoji or a short ``:name:``)."""


ToMemory = (
    MemSave
    | MemGet
    | MemRecall
    | MemForget
    | MemAssociate
    | MemAssociations
    | MemMaintain
    | MemIngest
    | MemChanges
    | MemAssociatePass
    | MemKnowledge
    | RunsRecord
    | RunsList
    | TranscriptAppend
    | TranscriptPage
    | TranscriptEdit
    | TranscriptMarkReply
    | TranscriptUnanswered
    | TranscriptPendingChannels
    | TranscriptSearch
    | ChannelUpsert
    | ChannelList
    | TranscriptReact
)
"""Requests the memory process serves."""


# --------------------------------------------------------------------------------------------
# Conversations: gateway → channel (``Inbound``) and channel → gateway (``Outbound``)
# --------------------------------------------------------------------------------------------


class Inbound(msgspec.Struct, frozen=True, tag="inbound"):
    """A person's message, already persisted by the gateway, for ``channel:<agent>:<conversation>``.

    The channel replies ``Ok()`` once it has queued the message (or already knew it); the gateway
    retries on ``no_route``/``unavailable``/timeouts. Sending it to a channel that is not running
    starts it (the supervisor holds the message until the channel is ready).
    """

    platform: str
    """Platform name (``web``, ``discord`` ...)."""
    conversation: str
    """Conversation id, starting with the platform (``web:4f2a...``)."""
    author_id: str
    """Platform id of the person."""
    author_name: str
    """Display name of the person."""
    text: str
    """Message text."""
    message_id: str
    """The platform's id of the message."""
    stored_id: int
    """Id of the persisted transcript row (what the channel marks answered)."""
    timestamp: float
    """When it was said (epoch seconds)."""
    gateway: str
    """Bus id of the gateway that owns the conversation (where replies go)."""
    attachments: list[dict[str, Any]] = []
    """Attachment metadata (name, url, mime, size)."""
    direct: bool = False
    """A one-to-one conversation (DM) rather than a group."""


class InboundEdit(msgspec.Struct, frozen=True, tag="inbound_edit"):
    """A person edited or deleted a message the gateway already stored (``TranscriptEdit`` done),
    for a running ``channel:<agent>:<conversation>``: its history shows ``message`` from then on.
    Replies ``Ok()`` (also when the message is not in its history)."""

    conversation: str
    """Conversation id."""
    message: StoredMessage
    """The message as stored now (``[deleted]`` for a deletion)."""


class WorkItem(msgspec.Struct, frozen=True):
    """One branch or worker running for a conversation, as its people see it."""

    id: str
    """Bus id of the branch or worker (what :class:`CancelWork` names)."""
    kind: str
    """``branch`` or ``worker``."""
    task: str
    """Its task (shortened)."""
    status: str = ""
    """Its last ``set_status`` line."""
    elapsed: float = 0.0
    """Seconds since it started, when this was sent."""


class OutTyping(msgspec.Struct, frozen=True, tag="out_typing"):
    """The agent started or stopped working on a conversation."""

    conversation: str
    """Conversation id."""
    state: Literal["thinking", "working", "idle"]
    """``thinking``, ``working`` or ``idle``."""
    detail: str = ""
    """What it is doing (for ``working``)."""
    work: list[WorkItem] = []
    """The branches and workers running (for ``working``)."""


class CancelWork(msgspec.Struct, frozen=True, tag="cancel_work"):
    """A person asks a conversation to stop one of its running branches or workers (request to
    ``channel:<agent>:<conversation>``; replies ``Ok``, or ``Err`` ``not_found`` when it is not one
    of that conversation's running delegates)."""

    id: str
    """Bus id of the branch or worker."""
    by: str = ""
    """Who asked (a display name), for the log and the conversation's model."""


class OutDelta(msgspec.Struct, frozen=True, tag="out_delta"):
    """The next characters of a reply being generated."""

    conversation: str
    """Conversation id."""
    reply_id: str
    """Id of the streamed reply (the final :class:`OutMessage` quotes it)."""
    text: str
    """New characters."""


class OutAbort(msgspec.Struct, frozen=True, tag="out_abort"):
    """A streamed reply was abandoned (model fallback, error): drop what was streamed for it."""

    conversation: str
    """Conversation id."""
    reply_id: str
    """The abandoned reply."""
    reason: str = ""
    """Why."""


class CardField(msgspec.Struct, frozen=True):
    """One ``name: value`` line of a :class:`Card`."""

    name: str
    """The label."""
    value: str
    """The value."""


class Card(msgspec.Struct, frozen=True, kw_only=True):
    """A structured part of a reply (``reply(card=…)``): a Discord embed, Slack blocks, plain text
    elsewhere (see ``spacebot/messaging/cards.py`` for its limits)."""

    title: str = ""
    """Heading."""
    text: str = ""
    """Body, in Markdown."""
    fields: list[CardField] = []
    """Labelled values, in order."""
    url: str = ""
    """Where the title links to (http or https)."""
    color: int | None = None
    """Accent colour as 0xRRGGBB."""


class Shown(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent's reply shows besides its text: what :class:`OutMessage` carries with it, kept
    in storage too (``StoredMessage.shown``) for a gateway that posts the reply after a restart."""

    card: Card | None = None
    """Its card (see ``OutMessage.card``)."""
    thread_name: str = ""
    """The thread it opens (see ``OutMessage.thread_name``)."""
    thread_on: int | None = None
    """Stored id of the message that thread is opened on."""


class OutMessage(msgspec.Struct, frozen=True, tag="out_message"):
    """A stored agent message (a finished reply or a notice) to show in the conversation."""

    conversation: str
    """Conversation id."""
    message: StoredMessage
    """The persisted message."""
    reply_id: str = ""
    """The stream it completes, if it was streamed."""
    thread_name: str = ""
    """Show it in a new thread of this name opened on the message ``thread_on`` (where the platform
    has threads; elsewhere it is shown in the conversation)."""
    thread_on: int | None = None
    """Stored id of the message the thread is opened on (the message being answered)."""
    card: Card | None = None
    """A structured part rendered by the platform; ``message.text`` ends with its plain-text form
    (:func:`spacebot.messaging.cards.plain`), which a platform that renders the card leaves out."""


class OutReaction(msgspec.Struct, frozen=True, tag="out_reaction"):
    """The agent reacted to a message."""

    conversation: str
    """Conversation id."""
    message_id: int
    """Stored id of the message reacted to."""
    emoji: str
    """The reaction."""


OutErrorCode = Literal["model", "unavailable", "internal"]
"""Why a channel could not answer (the web chat's error codes of the same names, docs/webchat.md)."""


class OutError(msgspec.Struct, frozen=True, tag="out_error"):
    """Something went wrong answering a message; shown to the people in the conversation."""

    conversation: str
    """Conversation id."""
    code: OutErrorCode
    """``model``, ``unavailable``, ``internal`` (see docs/webchat.md)."""
    text: str
    """What happened, for people."""
    message_id: int | None = None
    """The inbound message concerned, if one."""


Outbound = OutTyping | OutDelta | OutAbort | OutMessage | OutReaction | OutError
"""What a channel sends to the gateway that owns its conversation (one-way messages)."""


# --------------------------------------------------------------------------------------------
# Delegation: channel ⇄ branch / worker
# --------------------------------------------------------------------------------------------


Outcome = Literal["success", "partial", "cancelled", "timed_out", "failed"]
"""How a branch or worker ended."""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


class DelegateResult(msgspec.Struct, frozen=True, tag="delegate_result"):
    """A branch's conclusion or a worker's result, sent to the channel that started it (request)."""

    id: str
    """Bus id of the branch or worker."""
    outcome: Outcome
    """``success``, ``partial``, ``cancelled``, ``timed_out`` or ``failed``."""
    text: str
    """The conclusion / result / failure description, for the channel's model."""
    data: dict[str, Any] = {}
    """Structured extras (a compaction's summary and memory count, files written...)."""


StatusKind = Literal["progress", "outcome", "waiting"]
"""What a worker's status line says: work under way, a partial result, or a wait for input."""


class DelegateStatus(msgspec.Struct, frozen=True, tag="delegate_status"):
    """A worker's progress line, or that it waits for input (one-way, to its channel)."""

    id: str
    """Bus id of the worker."""
    text: str
    """The status line."""
    kind: StatusKind = "progress"
    """``progress``, ``outcome`` (what it has achieved so far) or ``waiting`` (needs input via ``route``)."""


class DelegateInput(msgspec.Struct, frozen=True, tag="delegate_input"):
    """Follow-up input for an interactive worker (the channel's ``route`` tool); replies ``Ok``."""

    text: str
    """What the person (through the channel) says to the worker."""


# --------------------------------------------------------------------------------------------
# Cron: scheduled jobs of an agent (docs/cron.md). Jobs and their runs live in the agent's DuckDB,
# owned by ``memory:<agent>``; ``cortex:<agent>`` schedules them and is their only writer.
# --------------------------------------------------------------------------------------------


CronSource = Literal["config", "cli", "conversation"]
"""Where a job was defined: ``[[cron]]`` in config.toml, ``spacebot cron add``, or the ``cron`` tool."""

CronOutcome = Literal["running", "success", "skipped", "failed", "timed_out", "interrupted"]
"""How a run ended (``running`` while it runs). ``failed`` and ``timed_out`` count towards
disabling the job; ``interrupted`` (Spacebot stopped or crashed mid-run) and ``skipped`` (the
agent chose to say nothing) do not."""


class CronJob(msgspec.Struct, frozen=True, kw_only=True):
    """One scheduled job: what to ask, when, and where the answer goes."""

    id: str
    """Job id: 1-64 of ``A-Z a-z 0-9 _ -``."""
    prompt: str
    """What the agent is asked to do at each run."""
    cron: str = ""
    """A 5-field cron expression (``30 8 * * mon-fri``); exactly one of ``cron`` and ``every``."""
    every: float = 0.0
    """An interval in seconds (at least 60)."""
    timezone: str = ""
    """IANA zone the expression and active hours are read in; empty: ``[defaults] timezone``, else
    the host's."""
    active_hours: str = ""
    """``HH:MM-HH:MM`` in the job's zone (may wrap past midnight, ``22:00-06:00``); empty: always."""
    run_once: bool = False
    """Run at the first due time, then never again."""
    deliver_to: str = ""
    """Conversation id the answer is posted to (``web:4f2a…``); empty: kept in the run history only."""
    timeout: float = 0.0
    """Seconds a run may take before it is given up (0: ``[defaults] cron_timeout``)."""
    enabled: bool = True
    """Whether it is scheduled; a job is disabled after consecutive failures (``disabled_reason``)."""
    source: CronSource = "cli"
    """Where it was defined."""
    created_by: str = ""
    """The conversation that created it with the ``cron`` tool (empty otherwise)."""
    next_run_at: float | None = None
    """When it runs next (epoch seconds); ``None``: not scheduled."""
    last_run_at: float | None = None
    """When it last started a run."""
    failures: int = 0
    """Consecutive failed or timed-out runs."""
    disabled_reason: str = ""
    """Why it was disabled automatically."""
    created_at: float = 0.0
    """When it was first defined."""
    updated_at: float = 0.0
    """When its definition or state last changed."""


class CronRun(msgspec.Struct, frozen=True, kw_only=True):
    """One execution of a job: the execution log row."""

    id: int
    """Run id, increasing."""
    job_id: str
    """The job."""
    conversation: str
    """The fresh ``cron:<job>.<run>`` conversation it ran in."""
    due_at: float
    """When it was due."""
    started_at: float
    """When it was claimed and started."""
    ended_at: float | None = None
    """When it ended (``None`` while running)."""
    outcome: CronOutcome = "running"
    """How it ended."""
    delivered: bool = False
    """Whether the answer reached ``deliver_to``."""
    error: str = ""
    """What went wrong, for the operator."""
    message_id: int | None = None
    """Stored id of the delivered message in the target conversation."""


class CronPut(msgspec.Struct, frozen=True, tag="cron_put"):
    """Insert or replace a job (definition and state); replies ``CronJob``."""

    job: CronJob
    """The whole row."""


class CronListJobs(msgspec.Struct, frozen=True, tag="cron_list_jobs"):
    """Every job, by id; replies ``list[CronJob]``."""


class CronDelete(msgspec.Struct, frozen=True, tag="cron_delete"):
    """Delete a job (its runs stay in the history); replies ``bool`` (whether it existed)."""

    id: str
    """Job id."""


class CronClaim(msgspec.Struct, frozen=True, tag="cron_claim"):
    """Start a run: in one transaction, move the job's cursor from ``due_at`` to ``next_run_at`` and
    record a ``running`` run. Replies ``CronRun``, or ``None`` when the cursor is no longer at
    ``due_at`` (claimed already) or the job is gone or disabled. A claimed run is never started
    again, whatever happens to the process that claimed it."""

    job_id: str
    """Job id."""
    due_at: float
    """The cursor value the claim expects (a manual run: the time it was asked for)."""
    next_run_at: float | None
    """The cursor after this run (``None``: not scheduled again, e.g. ``run_once``)."""
    manual: bool = False
    """A ``run-now``: the cursor is neither checked nor moved."""


class CronFinish(msgspec.Struct, frozen=True, tag="cron_finish"):
    """Record how a run ended and update its job's failure count (disabling it at ``max_failures``
    consecutive failures); replies ``CronJob`` (``None`` if the job was deleted meanwhile)."""

    run_id: int
    """The run."""
    outcome: CronOutcome
    """How it ended."""
    delivered: bool = False
    """Whether the answer reached the target."""
    error: str = ""
    """What went wrong."""
    message_id: int | None = None
    """Stored id of the delivered message."""
    max_failures: int = 3
    """Consecutive failures that disable the job."""


class CronRuns(msgspec.Struct, frozen=True, tag="cron_runs"):
    """Execution log, newest first; replies ``list[CronRun]``."""

    job_id: str | None = None
    """One job, or all."""
    limit: int = 20
    """Most rows."""
    running: bool = False
    """Only runs still ``running`` (what a restarted cortex resumes)."""


class CronClaimBatch(msgspec.Struct, frozen=True, tag="cron_claim_batch"):
    """Several :class:`CronClaim` s in one transaction (the jobs due at one moment); replies
    ``list[CronRun | None]`` in the same order."""

    claims: list[CronClaim]
    """The claims."""


class CronFinishBatch(msgspec.Struct, frozen=True, tag="cron_finish_batch"):
    """Several :class:`CronFinish` es in one transaction; replies ``list[CronJob | None]`` in order."""

    finishes: list[CronFinish]
    """The run ends."""


ToCronStore = (
    CronPut | CronListJobs | CronDelete | CronClaim | CronFinish | CronRuns | CronClaimBatch | CronFinishBatch
)
"""Requests about cron jobs that ``memory:<agent>`` serves."""


class CronJobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A job as a person defines it (the ``cron`` tool, ``spacebot cron add``)."""

    id: str
    """Job id."""
    prompt: str
    """What the agent is asked to do."""
    cron: str = ""
    """5-field cron expression."""
    every: float = 0.0
    """Interval in seconds."""
    timezone: str = ""
    """IANA zone."""
    active_hours: str = ""
    """``HH:MM-HH:MM``."""
    run_once: bool = False
    """Run once."""
    deliver_to: str = ""
    """Target conversation id."""
    timeout: float = 0.0
    """Run time limit in seconds (0: the default)."""


class CronCmdList(msgspec.Struct, frozen=True, tag="cron_cmd_list"):
    """List the agent's jobs; replies ``list[CronJob]``."""


class CronCmdAdd(msgspec.Struct, frozen=True, tag="cron_cmd_add"):
    """Define (or redefine and re-enable) a job; replies ``CronJob``. A job from config.toml cannot
    be redefined this way (config wins)."""

    spec: CronJobSpec
    """The definition."""
    source: CronSource = "cli"
    """Who defines it."""
    created_by: str = ""
    """The conversation that asks (the ``cron`` tool); its default delivery target."""


class CronCmdRemove(msgspec.Struct, frozen=True, tag="cron_cmd_remove"):
    """Delete a job; replies ``bool``."""

    id: str
    """Job id."""
    created_by: str = ""
    """Set by the ``cron`` tool: only jobs made from that conversation may be deleted from it."""


class CronCmdEnable(msgspec.Struct, frozen=True, tag="cron_cmd_enable"):
    """Enable (clearing its failures) or disable a job; replies ``CronJob``."""

    id: str
    """Job id."""
    enabled: bool = True
    """The new state."""


class CronCmdRunNow(msgspec.Struct, frozen=True, tag="cron_cmd_run_now"):
    """Start a run now, outside the schedule (the cursor stays); replies ``CronRun``."""

    id: str
    """Job id."""


class CronCmdHistory(msgspec.Struct, frozen=True, tag="cron_cmd_history"):
    """The execution log, newest first; replies ``list[CronRun]``."""

    id: str | None = None
    """One job, or all."""
    limit: int = 20
    """Most rows."""


CronCommand = CronCmdList | CronCmdAdd | CronCmdRemove | CronCmdEnable | CronCmdRunNow | CronCmdHistory
"""What ``cortex:<agent>`` answers about cron (from the ``cron`` tool, or from ``spacebot cron`` through
the control socket's :class:`CronRequest`)."""


# --------------------------------------------------------------------------------------------
# Anyone → cortex:<agent>
# --------------------------------------------------------------------------------------------


class KnowledgeGet(msgspec.Struct, frozen=True, tag="knowledge_get"):
    """The agent's knowledge block for a system prompt; replies ``KnowledgeBlock``."""

    known: str = ""
    """The ``version`` the caller already holds: when it is still current the reply leaves ``text``
    empty and says ``unchanged``."""


class KnowledgeBlock(msgspec.Struct, frozen=True, kw_only=True):
    """Reply to :class:`KnowledgeGet`: what the agent knows, rendered without a model."""

    version: str
    """Names the memory state it was rendered from; changes exactly when the text may."""
    text: str
    """The block (empty when there is nothing to show, or when ``unchanged``)."""
    unchanged: bool = False
    """The caller's ``known`` version is current: keep the text it has."""
    shown: int = 0
    """Memories in the block."""
    total: int = 0
    """Active memories of the types the block shows."""


class CortexStatus(msgspec.Struct, frozen=True, tag="cortex_status"):
    """What the cortex did and will do; replies ``CortexReport``."""


class CortexReport(msgspec.Struct, frozen=True, kw_only=True):
    """Reply to :class:`CortexStatus`."""

    task: str
    """The status line (as ``spacebotctl status`` shows it)."""
    circuit_open_until: float | None
    """Unix time maintenance may run again, when failures in a row opened its circuit."""
    failures: int
    """Maintenance failures in a row."""
    last_error: str
    """Why the last maintenance run failed (empty when it did not)."""
    runs: int
    """Maintenance runs since the cortex started (ticks that found nothing changed are not runs)."""
    skipped: int
    """Ticks that found memory unchanged and did nothing."""
    kills: int
    """Processes ended by supervision since the cortex started."""
    knowledge_version: str
    """Version of the knowledge block last rendered (empty: none yet)."""


class HistoryGet(msgspec.Struct, frozen=True, tag="history_get"):
    """The agent's latest process runs (exits of its processes, maintenance runs), newest first;
    replies ``list[ProcessRun]``."""

    limit: int = 20
    """Most rows."""
    kind: str = ""
    """Only this kind; empty: every kind."""
    proc_id: str = ""
    """Only this process; empty: every process."""


ToCortex = KnowledgeGet | CortexStatus | HistoryGet
"""Requests the cortex's own parts serve (cron's requests go to its part of the same process)."""


Body = (
    ToSupervisor
    | KillRequest
    | StatusRequest
    | ToChild
    | ToMemory
    | ToCronStore
    | CronCommand
    | ToCortex
    | Inbound
    | InboundEdit
    | Outbound
    | DelegateResult
    | DelegateStatus
    | DelegateInput
    | CancelWork
    | Ok
    | Err
    | Spawned
)
"""Everything an :class:`Envelope` may carry (resolved lazily by :class:`Envelope`'s decoder)."""
