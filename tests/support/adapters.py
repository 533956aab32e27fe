"""Fine-tuned adapters as a succeeded fine-tuning job leaves them, made without running one: a tiny
random LoRA version of the base model `tiny` (peft's layout), its `fine_tune` job, and the adapter
its job wrote at step 3 (a checkpoint, called by its own id)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from openmaas.engine.testing import build_tiny_adapter
from openmaas.ids import new_id
from openmaas.jobs.tables import Job
from openmaas.registry import service as registry
from openmaas.registry.manifest import FORMAT_VERSION, LORA_ADAPTER, MANIFEST
from openmaas.training.finetune_checkpoints import checkpoint_adapter_path
from tests.support.served import Served, Tenant


@dataclass(frozen=True)
class Adapter:
    model: str  # its `ft:` id
    version_id: str
    folder: Path  # its peft folder, for the engine's reference answer
    checkpoint: Adapter | None = None  # its job's checkpoint at step 3 (other weights), called by its own id


def register_adapter(served: Served, tenant: Tenant, base: Path, suffix: str, seed: int) -> Adapter:
    """What a succeeded fine-tuning job leaves: the adapter version and the job naming it."""
    platform = served.platform
    version_id, job_id = new_id("mv_"), new_id("ftjob-")
    model = f"ft:tiny:acme:{suffix}:{job_id}"
    relative = platform.store.model_dir(tenant.org_id, version_id)
    with platform.db.session() as session:
        base_version = registry.resolve(session, tenant.org_id, "tiny")[1]
        manifest = {
            "format_version": FORMAT_VERSION, "task": "text-generation", "source": LORA_ADAPTER,
            "base_version_id": base_version.id, "base": "tiny:1", "fine_tuned_model": model,
        }  # fmt: skip
        with platform.store.staged(relative) as folder:
            build_tiny_adapter(folder, base, seed=seed)
            (folder / MANIFEST).write_text(json.dumps(manifest))
        registry.register_version(
            session, version_id=version_id, org_id=tenant.org_id, model_name=f"tiny-{suffix}",
            artifact_path=relative, manifest=manifest, lineage={"job_id": job_id, "parent_version_id":
            base_version.id}, now=platform.clock.now(),
        )  # fmt: skip
        session.add(
            Job(
                id=job_id, org_id=tenant.org_id, kind="fine_tune", status="succeeded",
                params={"fine_tuned_model": model}, result={"model_version_id": version_id},
                created_at=platform.clock.now(),
            )
        )  # fmt: skip
    step_3 = checkpoint_adapter_path(platform.store, job_id, 3)
    with platform.store.staged(step_3) as folder:  # what the job writes with each epoch's checkpoint
        build_tiny_adapter(folder, base, seed=seed + 10)
    with platform.store.reading(relative) as folder, platform.store.reading(step_3) as at_step_3:
        checkpoint = Adapter(f"{model}:ckpt-step-3", f"{version_id}-step-3", Path(at_step_3))
        return Adapter(model, version_id, Path(folder), checkpoint)
