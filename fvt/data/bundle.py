"""``DataBundle``: what the data stage hands to training and evaluation, whatever the source
(folders and CSV files from ``pipeline``, WebDataset shards from ``streaming``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .dataset import ImageDataset
from .scan import FileInfo
from .transforms import Preprocessing


@dataclass
class DataBundle:
    train: ImageDataset
    val: Optional[ImageDataset]
    test: Optional[ImageDataset]
    classes: List[str]
    preprocessing: Preprocessing
    layout: str
    root: Path
    counts: Dict[str, Dict[str, int]] = field(default_factory=dict)     # split -> class -> n
    bad_files: List[Tuple[Path, str]] = field(default_factory=list)
    duplicates_across: List[List[Path]] = field(default_factory=list)    # same bytes in train and val/test
    duplicates_within: List[List[Path]] = field(default_factory=list)    # same bytes inside one split
    ignored: Dict[str, int] = field(default_factory=dict)                # hidden / non_image / stray
    split_file: Optional[Path] = None
    infos: List[FileInfo] = field(default_factory=list)                  # scan result of every file
    relabel: Optional[dict] = None                                       # what --relabel changed (file, counts)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_to_idx(self) -> Dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def summary_lines(self) -> List[str]:
        lines = [f"data: {self.root} ({self.layout}), {self.num_classes} classes: {', '.join(self.classes)}"]
        for split, per in self.counts.items():
            lines.append(f"  {split}: {sum(per.values())} images ({', '.join(f'{c} {n}' for c, n in per.items())})")
        if self.relabel:
            r = self.relabel
            lines.append(f"  relabel: {r['relabelled']} images relabelled, {r['dropped']} dropped ({r['file']})")
        return lines
