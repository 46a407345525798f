"""Server settings: ``FSTORE_SERVE_*`` environment variables, an optional YAML/JSON file, CLI flags.

Precedence, highest first: explicit overrides (CLI flags) > environment > the settings file
(``--config`` or ``FSTORE_SERVE_CONFIG``) > defaults. Field names are the file's keys and, upper
cased with the prefix, the environment variables (``FSTORE_SERVE_MAX_BATCH_SIZE=500``). Complex
values (``tokens``) are JSON in the environment.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from ruamel.yaml import YAML

__all__ = ["CONFIG_ENV", "ServeSettings", "load_settings", "read_config_file"]

CONFIG_ENV = "FSTORE_SERVE_CONFIG"
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("fstore_serve_config_file", default=None)


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML or JSON mapping (JSON is YAML); empty file -> {}."""
    data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        path = _CONFIG_FILE.get()
        if path is None:
            env = os.environ.get(CONFIG_ENV)
            path = Path(env) if env else None
        return read_config_file(path) if path is not None else {}


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FSTORE_SERVE_", extra="forbid", validate_default=True)

    # --- where -------------------------------------------------------------------------------
    listen: str = Field(default="127.0.0.1:50051", description="gRPC listen address host:port (port 0 = any)")
    registry_store: str | None = Field(
        default=None, description="registry store URL (default: $FSTORE_REGISTRY_STORE, else the local stack)"
    )
    registry_version: int | None = Field(
        default=None, ge=1, description="serve this applied version and never reload (default: latest)"
    )
    online_store: str | None = Field(
        default=None, description="cql:// URL of the online store (default: the registry store's, if cql)"
    )
    metrics_port: int | None = Field(
        default=9464, ge=0, le=65535, description="Prometheus port; null disables"
    )
    metrics_host: str = "127.0.0.1"
    reuse_port: bool = Field(
        default=False, description="SO_REUSEPORT: run one server process per core on the same port"
    )
    workers: int = Field(
        default=1, ge=1, le=256, description="server processes on the listen port (SO_REUSEPORT); ~1 per core"
    )

    # --- security ----------------------------------------------------------------------------
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = Field(
        default=None, description="set to require client certificates (mTLS)"
    )
    auth_enabled: bool = False
    tokens_file: Path | None = Field(default=None, description="YAML/JSON token grants, see docs/serving.md")
    tokens: dict[str, list[str]] = Field(
        default_factory=dict, description="token -> feature services ('*' = all); JSON in the env"
    )

    # --- limits ------------------------------------------------------------------------------
    max_batch_size: int = Field(default=1000, ge=1)
    max_concurrent_reads: int = Field(
        default=256, ge=1, description="partition reads in flight, server-wide (one per entity and table)"
    )
    max_concurrent_rpcs: int | None = Field(default=None, ge=1)
    deadline_ms: float = Field(default=200.0, gt=0, description="server-side cap on a look-up's time")
    deadline_margin_ms: float = Field(
        default=5.0, ge=0, description="answer this long before the client deadline"
    )
    store_request_timeout_ms: float = Field(default=1000.0, gt=0, description="the driver's per-read timeout")
    store_connect_retry_s: float = Field(default=2.0, gt=0)
    tile_cache_size: int = Field(
        default=100_000, ge=0, description="decoded tiles kept (content-keyed); 0 = off"
    )
    read_cache_size: int = Field(
        default=20_000, ge=0, description="window reads kept (content-keyed); 0 = off"
    )

    # --- lifecycle ---------------------------------------------------------------------------
    reload_interval_s: float = Field(default=10.0, ge=0, description="registry poll period; 0 disables")
    shutdown_grace_s: float = Field(default=5.0, ge=0, description="drain time for in-flight RPCs on SIGTERM")
    shutdown_delay_s: float = Field(
        default=0.0, ge=0, description="NOT_SERVING this long before the server stops accepting"
    )
    tune_gc: bool = Field(default=True, description="gc.freeze() after start-up and raise the gc thresholds")
    gc_threshold: int = Field(default=50_000, ge=700)
    log_level: str = "INFO"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listen address {value!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> ServeSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a file")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> ServeSettings:
    """Settings from overrides (``None`` values ignored), env, ``config_file`` and defaults."""
    token = _CONFIG_FILE.set(config_file)
    try:
        return ServeSettings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)
