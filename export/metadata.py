"""TFLite model metadata for MediaPipe Tasks, written with the flatbuffers schema MediaPipe ships.

mediapipe 1.2's metadata writer is broken (`mediapipe.tasks.cc` is missing), so this module builds the
`ModelMetadata` flatbuffer itself (`mediapipe/tasks/metadata/metadata_schema_py_generated.py`),
stores it in the model's `TFLITE_METADATA` buffer, and appends associated files (labels) as the zip
archive TFLite metadata uses. With it, `ImageEmbedder` and `ImageClassifier` load the model with
default options: the image input carries RGB, its size, and one scalar mean/std (per-channel
normalisation is folded into the model).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from spnas_core.errors import ExportError

METADATA_NAME = "TFLITE_METADATA"
MIN_PARSER_VERSION = "1.0.0"


@dataclass
class ImageInputSpec:
    """What the model's image input expects; the same parameters go into the MediaPipe graph."""

    height: int
    width: int
    mean: float = 0.0  # input = (pixel - mean) / std, pixel in 0..255
    std: float = 255.0
    color_space: str = "RGB"

    @property
    def float_range(self) -> tuple[float, float]:
        """The tensor value range MediaPipe's ImageToTensor produces for pixels 0..255."""
        return ((0.0 - self.mean) / self.std, (255.0 - self.mean) / self.std)


@dataclass
class ModelInfo:
    name: str
    description: str
    version: str = "1"
    author: str = "spnas"
    license: str = "Apache-2.0"
    labels: Sequence[str] = field(default_factory=list)
    output_name: str = "embedding"
    output_description: str = ""


def _schema():
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md

    return md


def build_metadata(image: ImageInputSpec, info: ModelInfo, classifier: bool) -> tuple[bytes, dict[str, bytes]]:
    """The packed ModelMetadata flatbuffer and the associated files it names."""
    import flatbuffers

    md = _schema()
    inp = md.TensorMetadataT()
    inp.name = "image"
    inp.description = f"RGB image, {image.width}x{image.height}, resized by stretching (no crop)"
    inp.content = md.ContentT()
    inp.content.contentPropertiesType = md.ContentProperties.ImageProperties
    props = md.ImagePropertiesT()
    props.colorSpace = getattr(md.ColorSpaceType, image.color_space)
    inp.content.contentProperties = props
    norm = md.ProcessUnitT()
    norm.optionsType = md.ProcessUnitOptions.NormalizationOptions
    opts = md.NormalizationOptionsT()
    opts.mean = [float(image.mean)]
    opts.std = [float(image.std)]
    norm.options = opts
    inp.processUnits = [norm]
    stats = md.StatsT()
    lo, hi = image.float_range
    stats.min = [lo]
    stats.max = [hi]
    inp.stats = stats

    out = md.TensorMetadataT()
    out.name = info.output_name
    out.description = info.output_description
    out.content = md.ContentT()
    out.content.contentPropertiesType = md.ContentProperties.FeatureProperties
    out.content.contentProperties = md.FeaturePropertiesT()
    files: dict[str, bytes] = {}
    if classifier:
        if not info.labels:
            raise ExportError("a classifier needs labels for its metadata")
        label_file = md.AssociatedFileT()
        label_file.name = "labels.txt"
        label_file.description = "class names, one per line, in logit order"
        label_file.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
        out.associatedFiles = [label_file]
        files["labels.txt"] = ("\n".join(info.labels) + "\n").encode()
        out.stats = md.StatsT()
    sub = md.SubGraphMetadataT()
    sub.inputTensorMetadata = [inp]
    sub.outputTensorMetadata = [out]
    model = md.ModelMetadataT()
    model.name = info.name
    model.description = info.description
    model.version = info.version
    model.author = info.author
    model.license = info.license
    model.subgraphMetadata = [sub]
    model.minParserVersion = MIN_PARSER_VERSION
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), md.ModelMetadataIdentifier() if hasattr(md, "ModelMetadataIdentifier") else b"M001")
    return bytes(b.Output()), files


def attach_metadata(tflite: bytes, metadata: bytes, files: dict[str, bytes] | None = None) -> bytes:
    """A copy of the model with the metadata buffer added (replacing any previous one) and files zipped on."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(_strip_zip(tflite)))
    buf = schema.BufferT()
    buf.data = list(metadata)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    out = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    if files:
        zbuf = io.BytesIO()
        zbuf.write(out)
        with zipfile.ZipFile(zbuf, "a", compression=zipfile.ZIP_STORED) as z:
            for name, data in files.items():
                z.writestr(name, data)
        out = zbuf.getvalue()
    return out


def _strip_zip(tflite: bytes) -> bytes:
    """The flatbuffer part of a model that may have associated files zipped onto its end."""
    try:
        with zipfile.ZipFile(io.BytesIO(tflite)) as z:
            start = min((i.header_offset for i in z.infolist()), default=len(tflite))
            return tflite[:start]
    except zipfile.BadZipFile:
        return tflite


def read_metadata(tflite: bytes | str | Path) -> dict[str, object]:
    """Decode the metadata of a model (for tests and the manifest): normalisation, size, labels."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(tflite).read_bytes() if isinstance(tflite, (str, Path)) else tflite
    model = schema.Model.GetRootAs(data, 0)
    md = _schema()
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        if m.Name().decode() == METADATA_NAME:
            raw = model.Buffers(m.Buffer()).DataAsNumpy().tobytes()
            meta = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(raw, 0))
            inp = meta.subgraphMetadata[0].inputTensorMetadata[0]
            norm = inp.processUnits[0].options
            out = meta.subgraphMetadata[0].outputTensorMetadata[0]
            labels = []
            files = [f.name.decode() if isinstance(f.name, bytes) else f.name for f in (out.associatedFiles or [])]
            if files:
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    labels = z.read(files[0]).decode().splitlines()
            return {"name": _s(meta.name), "mean": list(norm.mean), "std": list(norm.std),
                    "color_space": inp.content.contentProperties.colorSpace, "output": _s(out.name),
                    "associated_files": files, "labels": labels}
    raise ExportError("model has no TFLITE_METADATA")


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
