"""ShopLens: e-commerce customer profiles (用户画像) built offline with local language models.

The library is organised by stage, left to right (see DESIGN.md):
``ingest`` -> ``store`` -> ``features`` -> ``profiles``; the CLI is a thin door over it.
"""

from shoplens.errors import ShopLensError

__version__ = "0.1.0"
__all__ = ["ShopLensError", "__version__"]
