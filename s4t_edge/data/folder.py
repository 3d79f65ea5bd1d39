"""A folder of plain images (``images:DIR``): unlabeled frames for adaptation and prediction.

Every image file directly in DIR (png, jpg, jpeg, bmp, tif, webp, ppm; sorted by name) is one
sample; its id is the file name without the extension.  Grey, palette and RGBA images are
converted to RGB; 16-bit images are refused.  There are no labels, so `eval` and `adapt` skip
the metrics and write the predictions instead (`s4t_edge.data.predictions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.data.files import list_images, read_rgb
from s4t_edge.data.source import Reader, check_root
from s4t_edge.errors import DataError


class FolderReader(Reader):
    """Images of one folder, no labels."""

    kind = "images"
    tasks: tuple[str, ...] = ()

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        check_root(self.root, "image", "the image files")
        self.files = list_images(self.root)
        if not self.files:
            raise DataError(
                f"{self.root}: holds no image files (png, jpg, jpeg, bmp, tif, webp, ppm); "
                "give the folder with the frames"
            )
        stems = [p.stem for p in self.files]
        dup = sorted({s for s in stems if stems.count(s) > 1})
        if dup:
            raise DataError(
                f"{self.root}: {dup[0]!r} exists with two extensions; keep one file per frame name"
            )
        self.ids = stems
        self.meta: dict[str, Any] = {"dataset": "images", "root": str(self.root), "split": None}

    def path_of(self, i: int) -> str:
        return str(self.files[i])

    def load_native(self, i: int) -> dict[str, np.ndarray]:
        return {"image": read_rgb(self.files[i])}
