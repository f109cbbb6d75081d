"""The weights inventory: one record per registered model with the state of its folder."""

from __future__ import annotations

from fairxray.models.registry import get_spec, list_models, weights_status


def inventory(weights_dir: str | None) -> list[dict]:
    """One record per registered model, with the state of ``<weights_dir>/<model>/``."""
    out = []
    for name in list_models():
        s = get_spec(name)
        st = weights_status(name, weights_dir)
        out.append(
            {
                "name": name,
                "family": s.family,
                "source": s.source,
                "license": s.license,
                "weight_files": list(s.weight_files),
                "sha256_known": sorted(f for f, h in s.sha256.items() if h),
                "folder": str(st.folder) if st.folder is not None else None,
                "present": st.present,
                "valid": st.valid,
                "checked": st.checked,
                "problems": st.problems,
                "embed_dim": s.embed_dim,
                "feature_dim": s.feature_dim,
                "image_size": s.image.size,
                "in_channels": s.image.in_channels,
                "prompt_style": s.prompt_style,
                "zero_shot": s.zero_shot,  # False: image-only, no zero_shot method
                "lora_targets": s.lora_targets
                if isinstance(s.lora_targets, str)
                else list(s.lora_targets),
                "notes": s.notes,
            }
        )
    return out
