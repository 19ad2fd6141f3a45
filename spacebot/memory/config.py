"""Settings of the memory engine: one frozen struct, embedded in the project's config."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec


class MemoryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Tunables of one agent's memory engine. Every field has a sound default."""

    max_content_bytes: int = 50_000
    """Largest memory content accepted, in UTF-8 bytes."""
    max_query_chars: int = 4_000
    """Queries longer than this are cut (the model sees at most ``max_tokens`` tokens anyway)."""
    duckdb_memory_mb: int = 512
    """DuckDB buffer-pool limit (MB); DuckDB's own default is 80 % of the machine's RAM."""
    duckdb_threads: int = 2
    """Threads DuckDB may use for one query."""
    embed_threads: int = 2
    """onnxruntime intra-op threads used by the embedder."""
    embed_batch: int = 32
    """Texts embedded per model call."""
    max_tokens: int = 256
    """Token window of the embedding model; longer texts are truncated."""
    hnsw_m: int = 16
    """HNSW graph degree."""
    hnsw_ef_construction: int = 100
    """HNSW build-time candidate list size."""
    hnsw_ef: int = 100
    """HNSW query-time candidate list size (raised to the number of results asked for)."""
    hnsw_save_every: int = 5_000
    """Vector writes between saves of the HNSW file (DuckDB holds the vectors, so a crash only costs
    a catch-up at the next start)."""
    text_commit_every: int = 2_000
    """Pending full-text writes that force a commit; otherwise commits happen before the next search."""
    touch_batch: int = 64
    """Recalled ids whose access counts are buffered before one UPDATE writes them (writes, ``get``
    and ``flush`` write them sooner)."""
    vector_top_n: int = 200
    """Candidates taken from the vector index for hybrid recall."""
    bm25_top_n: int = 200
    """Candidates taken from the full-text index for hybrid recall."""
    context_window: int = 2
    """Sequence neighbours on each side whose text joins a memory's BM25 context (``bm25_ctx``)."""
    graph_seeds: int = 10
    """Fused hits whose association neighbours are added to hybrid recall."""
    graph_sequence: int = 0
    """Sequence neighbours on each side of each graph seed that join the graph list (0: only
    associations)."""
    graph_top_n: int = 50
    """Largest number of graph neighbours entering the fusion."""
    rrf_k: int = 10
    """Reciprocal Rank Fusion constant: score = sum over lists of weight / (k + rank). This, the
    weights below, the windows and the depths were chosen on half of LoCoMo and checked on the
    other half (``bench/locomo.py``, docs/memory.md); a small k lets the first ranks of each list
    dominate."""
    weight_vector: float = 0.5
    """RRF weight of the plain vector list."""
    weight_bm25: float = 1.0
    """RRF weight of the plain BM25 list."""
    weight_vector_ctx: float = 1.0
    """RRF weight of the vector list scored over sequence neighbours (previous/next memory)."""
    weight_bm25_ctx: float = 2.0
    """RRF weight of the BM25 list scored over sequence neighbours."""
    weight_graph: float = 0.25
    """RRF weight of the association-graph list."""
    weight_person: float = 0.5
    """RRF weight of each of the two person lists (the query's vector and BM25-context lists
    restricted to the memories by or about the people it names: ``memory/people.py``); 0: off."""
    person_depth: int = 400
    """Vector and BM25-context hits read to find the best ones among a named person's memories."""
    rerank: bool = True
    """Reorder the top ``rerank_depth`` fused candidates of a hybrid recall that uses every source
    with the learned reranker (``memory/rerank.py``): a logistic model over each candidate's list
    positions and scores, its sequence neighbours, its length and the people the query names."""
    rerank_depth: int = 200
    """Fused candidates the reranker reorders (the rest follow in fused order)."""
    rerank_model: str = ""
    """Path of a reranker model file (JSON, as ``bench/locomo.py --write-reranker`` writes it);
    empty: the model shipped with Spacebot."""
    resolve_dates: bool = False
    """Resolve relative dates ("yesterday", "last week", "two days ago") against the time a memory
    was said: the absolute dates join its indexed text and its ``dates`` metadata, and a recall
    query's relative dates are resolved against the time of the recall (``memory/temporal.py``)."""
    date_timezone: str = ""
    """IANA zone giving the calendar day of a Unix time when dates are resolved; empty: the
    ``[defaults] timezone`` of the configuration when the memory process runs, else the machine's
    zone."""
    link_threshold: float = 0.75
    """Cosine similarity above which a new memory is linked ``related_to`` a near neighbour."""
    duplicate_threshold: float = 0.92
    """Cosine similarity above which a new memory of the same type ``updates`` the older one."""
    link_max: int = 5
    """Most ``related_to`` edges added when a memory is saved."""
    superseded_factor: float = 0.5
    """Importance multiplier applied to a memory that a newer near-duplicate updates."""
    decay_half_life_days: float = 30.0
    """Days without access after which decay halves the importance above the floor."""
    decay_access_bonus: float = 0.1
    """Each past access slows decay: the half-life is multiplied by 1 + bonus * access_count."""
    prune_floor: float = 0.05
    """Importance under which maintenance forgets a memory (identity is exempt)."""
    merge_threshold: float = 0.95
    """Cosine similarity above which maintenance merges two memories of the same type."""
    ingest_chunk_chars: int = 4_000
    """Target size of an ingestion chunk; chunks end at line boundaries."""
    ingest_max_file_bytes: int = 20_000_000
    """Larger files in the ingest folder are refused: moved to ``ingest/failed/`` at once."""
    ingest_max_attempts: int = 5
    """Attempts at a file before it is moved to ``ingest/failed/`` with a ``.reason`` file. An attempt
    counts from the moment it starts, so a process that dies during it cannot retry forever."""
    ingest_retry_delay: float = 30.0
    """Seconds before a failed file is tried again; doubled after each further failure."""
    ingest_retry_max_delay: float = 3_600.0
    """Longest wait between two attempts at a file."""

    def __post_init__(self) -> None:
        # A ValueError here is reported by the config loader with the key's path.
        if self.graph_sequence < 0:
            raise ValueError("graph_sequence must be >= 0")
        if self.ingest_max_attempts < 1:
            raise ValueError("ingest_max_attempts must be >= 1")
        if self.ingest_retry_delay < 0:
            raise ValueError("ingest_retry_delay must be >= 0")
        if self.ingest_retry_max_delay < self.ingest_retry_delay:
            raise ValueError("ingest_retry_max_delay must be >= ingest_retry_delay")
        if self.date_timezone:
            try:
                ZoneInfo(self.date_timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown date_timezone {self.date_timezone!r}") from None
