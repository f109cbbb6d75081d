"""fairxray: reproducible fairness analysis of CLIP-like chest X-ray models on NIH ChestX-ray14.

Nothing runs at import; the library lives in submodules (``fairxray.config``, ``fairxray.data``,
``fairxray.models``, ...) and each pipeline stage is a thin CLI in ``fairxray.stages``.
"""

__version__ = "0.1.0"

DEMO_BANNER = "DEMO: synthetic images and small random models, not NIH results"
