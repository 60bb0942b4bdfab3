"""Settings: read once at start-up from ``TAILOR_*`` environment variables into one frozen
object that is passed down (pydantic-settings). An unknown ``TAILOR_*`` variable or a bad
value stops start-up with a message naming it.

Every setting is listed in README.md (keep the table in sync:
tests/unit/service/test_settings.py checks).
"""
from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from adapters.limits import Limits, RequestLimits
from export.onnx_config import Quantize

PREFIX = "TAILOR_"
# The command-line client's variables (service/cli.py): a shell that uses the CLI may also
# start the server, so these are not "unknown settings".
CLIENT_VARIABLES = frozenset({"TAILOR_URL", "TAILOR_API_KEY"})


class SettingsError(ValueError):
    pass


# The environment a ``Settings()`` reads: os.environ, or the mapping given to ``from_env``.
_ENVIRON: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "tailor_settings_environ", default=None)


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, values stripped and empty
    ones ignored (``TAILOR_X=`` means "the default")."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v.strip() for k, v in self._environ.items()
                if k.startswith(PREFIX) and v.strip()}


class Settings(BaseSettings, RequestLimits):
    """Every field is ``TAILOR_<FIELD>``. The request limits (``max_inputs``, ``max_chars``,
    ...) are inherited from the domain's ``RequestLimits`` (adapters/limits.py), defined
    there once with their defaults, bounds and descriptions."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid")

    backbone_path: Path | None = Field(None, description="local Hugging Face model folder; empty = the embedded all-MiniLM-L6-v2")
    backbone_name: str | None = Field(None, description="name recorded in adapter manifests; default: the folder name")
    store_path: Path = Field(Path("tailor-store"), description="adapter store folder (shared by replicas); with an s3:// TAILOR_STORE_URL, this replica's own folder for its file cache, training scratch space and the file job queue")
    store_url: str | None = Field(None, description="where adapters are stored: empty = the folder TAILOR_STORE_PATH, file:///path = that folder, s3://bucket/prefix = an S3-compatible bucket (endpoint and credentials from the standard AWS variables AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION or ~/.aws; docs/s3.md)")
    store_cache_mb: int = Field(1024, ge=1, description="with an s3:// store: local disk cache of adapter files per replica, in MiB (least recently used files go first)")
    cache_size: int = Field(256, ge=1, description="adapters kept loaded in memory (LRU)")
    torch_threads: int = Field(1, ge=0, description="intra-op torch threads per forward (forwards run side by side, see forward_workers); 0 = torch's default")
    forward_workers: int = Field(0, ge=0, le=64, description="backbone forwards run side by side; 0 = one per CPU core")
    max_batch_rows: int = Field(64, ge=1, le=4096, description="rows per backbone forward")
    batch_wait_ms: float = Field(20.0, ge=0, le=1000, description="longest wait for the rows the batcher expects (as many as its last batches had); a lone request never waits")
    max_queued_rows: int = Field(4096, ge=1, description="rows waiting for the backbone before 429")
    max_queue_wait_s: float = Field(30.0, gt=0, le=3600, description="expected wait for the backbone (queued rows x measured seconds per row) above which a predict/embed answers 429")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body (413 above)")
    max_adapters_per_tenant: int = Field(1000, ge=1, description="adapter names per tenant; creating a new name above it answers 422 (new versions of an existing name do not count)")
    job_queue_size: int = Field(8, ge=1, description="training jobs waiting in the store before 429")
    job_concurrency: int = Field(1, ge=1, le=16, description="training jobs each training process (TAILOR_ROLE all or train) runs at once")
    job_attempts: int = Field(2, ge=1, le=10, description="times a job is started before it fails: a trainer lost mid-job (killed, out of memory) gives the job to another trainer while attempts are left")
    job_lease_s: float = Field(30.0, ge=1, le=3600, description="a running job's lease: its trainer renews it every third of this; a trainer that stops renewing loses the job after this long")
    queue_url: SecretStr | None = Field(None, description="where training jobs are queued: empty = files in the store (`<store>/jobs`, one node or a ReadWriteMany volume); `postgresql://user:password@host:5432/db` = a PostgreSQL database shared by every replica and trainer (docs/postgres-queue.md); while it is unreachable, submits and job reads answer 503 with Retry-After")
    role: Literal["all", "serve", "train"] = Field("all", description="all: serve and train; serve: every route, jobs are only queued; train: run queued jobs, serve only /readyz, /livez, /metrics")
    max_concurrent_creates: int = Field(4, ge=1, le=256, description="adapter creates and updates training in requests at once; more answer 429 with Retry-After")
    metrics_max_series: int = Field(1000, ge=1, le=1_000_000, description="label sets per per-adapter metric family on /metrics; past it the least used adapters fold into adapter=\"other\"")
    train_threads: int = Field(1, ge=1, le=256, description="torch threads of each LoRA training worker process")
    train_nice: int = Field(10, ge=0, le=19, description="CPU priority offset (nice) of LoRA training workers")
    train_warm: bool = Field(True, description="fork each training worker from a fork server that imported torch and the backbone's modules once (a LoRA job of 8 x 6 examples done in ~1.8 s instead of ~5.0 s; the fork server holds ~450 MiB while idle, from the first job on); false: a fresh interpreter per job")
    runtime: Literal["auto", "torch", "torch-bf16", "torch-bf16-rows", "torch-int8-rows", "onnx-int8-rows", "onnx"] = Field("auto", description="backbone runtime for serving: auto (at start-up, the fastest at batch 32, ties within 10% going to the faster at batch 1, of the registered candidates (onnx int8 rows, onnx fp32, torch bf16, torch fp32) that keeps cosine >= 0.995 and mean drift <= 1e-3 to fp32 on a fixed sample AND is batch-invariant (a text alone and in mixed batches within 1e-5); decision cached in the store's .onnx folder, export/runtimes/auto.py), torch (PyTorch eager fp32), torch-bf16 (PyTorch on a bf16 copy: fast on AMX / avx512_bf16 CPUs, NOT batch-invariant: answers move by up to ~3e-3 with what shares the batch), torch-bf16-rows (the same bf16 copy with attention row by row on real tokens: batch-invariant, bitwise on avx512_bf16 CPUs; 1.5-1.7x onnx fp32 at c=64 on long texts, slower for one short text, and exports (fp32 graphs) differ from its answers by up to ~3.5e-3: opt-in, not an auto candidate), torch-int8-rows (PyTorch on an int8 copy: exact int32 GEMMs with one activation scale per token, SmoothQuant, attention row by row: batch-invariant by construction, for CPUs with int8 dot products (VNNI/AMX) but no bf16 units: over HTTP here 1.41x onnx fp32 at c=64 on long texts, 0.77x torch-bf16-rows; mean drift 8.5e-4 from fp32; opt-in, not an auto candidate: thin accuracy margin, fp32 exports), onnx-int8-rows (the same per-token int8 maths as one onnxruntime graph on the CPU provider, export/int8_rows.py: batch-invariant by construction, mean drift 7.6e-4 from fp32; LoRA rows in its routed int8 graph; an auto candidate, chosen on the 2-core dev machine: 1.35-1.42x onnx fp32 at c=64, 0.85-0.89x for one short text at a time; exports with quantize int8-rows, the HTTP default on it, reproduce its answers) or onnx (onnxruntime)")
    onnx_providers: str = Field("CPUExecutionProvider", description="comma-separated onnxruntime execution providers; start-up fails if one is not active")
    onnx_quantize: Quantize = Field("none", description="onnx runtime: fp32 (none) or dynamic per-channel int8 backbone")
    onnx_threads: int = Field(0, ge=0, description="onnx runtime: intra-op threads of the one session; 0 = onnxruntime's default (all cores)")
    onnx_cuda_tf32: bool = Field(False, description="onnx runtime on CUDAExecutionProvider: allow TF32 matmuls (2.7-4x faster on an H200, embeddings differ from fp32 by ~2e-4)")
    api_keys_file: Path | None = Field(None, description="file of API keys, one `<key> <tenant> [admin]` per line (service/auth.py); in Kubernetes the mounted Secret")
    api_keys: SecretStr | None = Field(None, description="API keys inline, same format as the file, entries separated by newlines or commas (the file is preferred: environments leak)")
    require_api_keys: bool = Field(False, description="refuse to start without API keys; otherwise, with none configured, the service runs open and single-tenant (tenant `default`)")

    @model_validator(mode="after")
    def _keys_when_required(self) -> "Settings":
        if self.require_api_keys and self.api_keys_file is None and self.api_keys is None:
            raise ValueError(
                "TAILOR_REQUIRE_API_KEYS=true but no API keys are configured: set "
                "TAILOR_API_KEYS_FILE to a file of `<key> <tenant> [admin]` lines (or TAILOR_API_KEYS)")
        return self

    @model_validator(mode="after")
    def _store_url_parses(self) -> "Settings":
        if self.store_url:
            from adapters.storage.factory import parse_store_url
            parse_store_url(self.store_url)  # a ValueError names the bad URL
        return self

    @model_validator(mode="after")
    def _int8_is_for_cpu(self) -> "Settings":
        if (self.runtime == "onnx" and self.onnx_quantize == "int8"
                and "CUDAExecutionProvider" in self.providers()):
            raise ValueError(
                "TAILOR_ONNX_QUANTIZE=int8 with CUDAExecutionProvider: dynamic int8 runs at "
                "0.05-0.7x of fp32 PyTorch on a GPU (measured on an H200, benchmarks/RESULTS.md); "
                "use TAILOR_ONNX_QUANTIZE=none there (and TAILOR_ONNX_CUDA_TF32=true for speed)")
        if self.runtime == "onnx-int8-rows" and self.providers() != ["CPUExecutionProvider"]:
            raise ValueError(
                "TAILOR_RUNTIME=onnx-int8-rows runs on onnxruntime's CPU provider only (its "
                "MatMulIntegerToFloat kernels are CPU kernels), but TAILOR_ONNX_PROVIDERS is "
                f"{','.join(self.providers())}; unset TAILOR_ONNX_PROVIDERS, or use "
                "TAILOR_RUNTIME=onnx on a GPU")
        return self

    @model_validator(mode="after")
    def _queue_url_scheme(self) -> "Settings":
        url = self.queue_url.get_secret_value() if self.queue_url else ""
        if url and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("TAILOR_QUEUE_URL must be a postgresql:// URL (or empty for the "
                             f"file queue in the store), got {url.split(':', 1)[0]}:...")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any,
                                   *_: Any, **__: Any) -> tuple[Any, ...]:
        """Only the environment (no .env or secrets files): one documented way in."""
        return init_settings, _Environ(settings_cls, _ENVIRON.get() or os.environ)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        for key in env:
            if key.startswith(PREFIX) and key not in CLIENT_VARIABLES \
                    and key[len(PREFIX):].lower() not in cls.model_fields:
                raise SettingsError(f"unknown setting {key}; known: "
                                    + ", ".join(PREFIX + f.upper() for f in cls.model_fields))
        token = _ENVIRON.set(env)
        try:
            return cls()
        except ValidationError as e:
            bad = "; ".join((f"{PREFIX}{'.'.join(map(str, err['loc'])).upper()}: " if err["loc"] else "")
                            + err["msg"].removeprefix("Value error, ") for err in e.errors())
            raise SettingsError(f"invalid settings: {bad}") from None
        finally:
            _ENVIRON.reset(token)

    def providers(self) -> list[str]:
        return [p.strip() for p in self.onnx_providers.split(",") if p.strip()]

    def workers(self) -> int:
        return self.forward_workers or len(os.sched_getaffinity(0))

    def limits(self) -> Limits:
        return Limits(**{name: getattr(self, name) for name in RequestLimits.model_fields})
