"""The model registry as the API shows it: versions with their aliases, metrics and model cards. The
registry is synchronous psycopg (vision.registry); calls run off the event loop."""

from __future__ import annotations

import asyncio

from vision.registry import ModelNotFound, ModelRegistry, ModelVersion


class ModelCatalog:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def versions(self) -> list[ModelVersion]:
        return await asyncio.to_thread(self.registry.list_versions)

    async def version(self, version: str) -> ModelVersion | None:
        """A version by name or alias (production, candidate, shadow)."""
        try:
            return await asyncio.to_thread(self.registry.resolve, version)
        except ModelNotFound:
            return None
