"""The model registry as the API shows it: versions with their aliases, metrics and model cards, and
the files an edge agent downloads to decide locally. The registry is synchronous psycopg
(vision.registry); calls run off the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from infra.store import ObjectNotFoundError, ObjectStore, sha256_hex
from vision.artifacts import MANIFEST, NOVELTY, ONNX, SIGNATURE, Manifest, signature_key
from vision.registry import ModelNotFound, ModelRegistry, ModelVersion

# What an edge agent needs to check and run a version: the manifest and its signature, the ONNX export
# and the novelty statistics. The weights, the drift reference and the card stay central.
DOWNLOADABLE = {MANIFEST: "application/json", SIGNATURE: "application/json", ONNX: "application/octet-stream",
                NOVELTY: "application/octet-stream"}


class ArtifactNotFound(LookupError):
    """No such version or alias, no such file, or the file is not in the store."""


@dataclass(frozen=True)
class ArtifactFile:
    """A version's file as the API serves it. `sha256` is what the registry (the manifest) or the signed
    manifest (the other files) recorded, not a digest of what the store holds: the client checks the
    bytes against it."""

    version: str
    name: str
    key: str
    sha256: str | None
    media_type: str


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

    async def artifact(self, ref: str, name: str, store: ObjectStore) -> ArtifactFile:
        """Where a version's (or an alias's version's) downloadable file is, and its recorded sha256."""
        if name not in DOWNLOADABLE:
            raise ArtifactNotFound(f"{name!r} is not a file edge agents download: {', '.join(DOWNLOADABLE)}")
        found = await self.version(ref)
        if found is None:
            raise ArtifactNotFound(f"no model version or alias {ref!r}")
        if name == MANIFEST:
            return ArtifactFile(found.version, name, found.manifest_key, found.manifest_sha256, DOWNLOADABLE[name])
        if name == SIGNATURE:
            return ArtifactFile(found.version, name, signature_key(found.manifest_key), None, DOWNLOADABLE[name])
        try:
            manifest = Manifest.from_json(await asyncio.to_thread(store.get, found.manifest_key))
        except ObjectNotFoundError:
            raise ArtifactNotFound(f"the manifest of {found.version} is not in the store") from None
        except (ValueError, KeyError, TypeError):
            raise ArtifactNotFound(f"the manifest of {found.version} does not parse: its files cannot be named") \
                from None
        entry = manifest.files.get(name)
        if entry is None:
            raise ArtifactNotFound(f"{found.version} has no {name}")
        return ArtifactFile(found.version, name, entry["key"], entry["sha256"], DOWNLOADABLE[name])

    @staticmethod
    async def read(artifact: ArtifactFile, store: ObjectStore) -> tuple[bytes, str]:
        """The file's bytes as the store holds them, and their sha256 (the ETag of a signature, which
        nothing records)."""
        try:
            data = await asyncio.to_thread(store.get, artifact.key)
        except ObjectNotFoundError:
            raise ArtifactNotFound(f"{artifact.name} of {artifact.version} is not in the store") from None
        return data, artifact.sha256 or sha256_hex(data)
