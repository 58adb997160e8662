"""Plate formats Pillow cannot read (EXR, DPX, Cineon, Radiance HDR, float TIFF) through OpenImageIO.

OpenImageIO (the ASWF library, PyPI ``OpenImageIO``, the project's ``plates`` extra) is optional, as
OpenEXR is for the EXR export: it is imported only when such a plate is read, and a set of inputs
that needs it fails before any work with one line naming the package (:func:`check_readable`).

The model takes display-referred 8-bit RGB. A plate becomes that as follows (``colorspace``):

* ``linear`` (``auto`` for float data: EXR, HDR, float TIFF, and files that declare a linear colour
  space, e.g. Blender's DPX with ``dpx:Transfer`` Linear): scene-linear values are clamped to
  0..1 and encoded with the sRGB transfer function (the piecewise IEC 61966-2-1 curve), i.e. what
  Blender's "Standard" view shows; highlights above 1 clip;
* ``srgb`` (``auto`` for other integer data: DPX, Cineon, 16-bit TIFF/PNG): the values are taken as
  display-referred, scaled from their bit depth to 0..255 (no log-to-linear conversion: a log DPX
  looks flat, as it does in a viewer without a LUT).

Alpha and channels past the third are dropped; a one-channel plate is grey. The EXR
``framesPerSecond`` attribute, when present, is the sequence's rate (:func:`plate_rate`).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from ..errors import BadInputError, DA3Error, MissingDependencyError

OIIO_EXTENSIONS = (".exr", ".dpx", ".cin", ".hdr")  # formats only OpenImageIO reads here
INSTALL_HINT = "pip install 'OpenImageIO==3.0.21.0' (or the project's [plates] extra)"
_FLOAT_TYPES = ("half", "float", "double")
_CONVERT_HINT = "convert it to PNG or JPEG"


def _ext(path) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


def needs_oiio(path) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in OIIO_EXTENSIONS


def oiio(path=None):
    """The OpenImageIO module, or one :class:`MissingDependencyError` line naming the package."""
    try:
        import OpenImageIO
    except ImportError:
        what = f"{os.path.basename(os.fspath(path))}: reading " if path else "reading "
        ext = os.path.splitext(os.fspath(path))[1].lstrip(".").upper() + " " if path else ""
        raise MissingDependencyError(f"{what}{ext}plates needs the OpenImageIO package; install it with: "
                                     f"{INSTALL_HINT}") from None
    return OpenImageIO


def check_readable(paths) -> None:
    """Before any work: OpenImageIO is there when one of ``paths`` needs it."""
    for path in paths:
        if needs_oiio(path):
            oiio(path)
            return


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Scene-linear values, clamped to 0..1, -> sRGB-encoded 0..1 (IEC 61966-2-1)."""
    c = np.clip(np.nan_to_num(linear, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)


def to_display_uint8(rgb: np.ndarray, linear: bool) -> np.ndarray:
    """Float RGB (0..1 nominal) -> HxWx3 uint8 for the model: sRGB-encoded when ``linear``."""
    rgb = srgb_encode(rgb) if linear else np.clip(np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return np.rint(rgb * 255.0).astype(np.uint8)


def _open(path):
    lib = oiio(path)
    inp = lib.ImageInput.open(os.fspath(path))
    if inp is None:
        detail = (lib.geterror() or "unknown error").strip().splitlines()[0][:200]
        raise BadInputError(f"{path} cannot be read as an image ({detail}); export or copy it again")
    return inp


def read_plate(path, colorspace: str = "auto") -> np.ndarray:
    """One plate -> HxWx3 uint8 display-referred RGB (see the module doc for ``colorspace``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadInputError(f"{path}: file not found; check the path")
    if os.path.getsize(path) == 0:
        raise BadInputError(f"{path} is empty (0 bytes); copy or export the image again")
    inp = _open(path)
    try:
        spec = inp.spec()
        pixels = inp.read_image(0, 0, 0, spec.nchannels, "float")
        linear = is_linear(spec, colorspace)
    finally:
        inp.close()
    if pixels is None or getattr(pixels, "size", 0) == 0:
        raise BadInputError(f"{path} is truncated or corrupt (no pixels could be read); export or copy it again")
    pixels = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, spec.nchannels)
    picked = colour_channels(list(spec.channelnames))
    rgb = pixels[:, :, picked] if len(picked) == 3 else np.repeat(pixels[:, :, picked[:1]], 3, axis=2)
    return to_display_uint8(rgb, linear)


def is_linear(spec, colorspace: str = "auto") -> bool:
    """Whether a plate (its OpenImageIO spec) holds scene-linear values: ``colorspace`` linear/srgb say so;
    auto: float data (EXR, HDR), or a file that declares a linear colour space (``oiio:ColorSpace``
    such as ``lin_rec709``, ``dpx:Transfer`` Linear: Blender's DPX); log and video DPX stay as they are."""
    if colorspace != "auto":
        return colorspace == "linear"
    declared = f"{spec.getattribute('oiio:ColorSpace') or ''} {spec.getattribute('dpx:Transfer') or ''}".lower()
    return str(spec.format) in _FLOAT_TYPES or "lin" in declared.replace("linear", "lin")


def colour_channels(names: list[str]) -> list[int]:
    """The indices of the R, G, B channels (``R``/``G``/``B``, or a layer's ``*.R``/``*.G``/``*.B``, the
    first layer that has all three, e.g. a multilayer EXR's ``ViewLayer.Combined.R``), else the first
    three channels, else ``[0]`` (grey)."""
    for layer in [""] + sorted({n.rsplit(".", 1)[0] + "." for n in names if "." in n}):
        found = [names.index(layer + c) for c in "RGB" if layer + c in names]
        if len(found) == 3:
            return found
    return [0, 1, 2] if len(names) >= 3 else [0]


def plate_rate(path) -> float | None:
    """The plate's ``framesPerSecond`` (EXR), None when it has none or OpenImageIO cannot read it."""
    if not needs_oiio(path):
        return None
    inp = _open(path)
    try:
        value = inp.spec().getattribute("FramesPerSecond")
    finally:
        inp.close()
    try:
        num, den = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return num / den if num > 0 and den > 0 else None


def plate_transfer(path, colorspace: str = "auto") -> str:
    """How :func:`read_plate` turns this plate into the model's input, for the summary and the result."""
    if not needs_oiio(path):
        return "scene-linear, clamped to 0..1 and sRGB-encoded" if colorspace == "linear" else \
            "display-referred (as read)"
    inp = _open(path)
    try:
        linear = is_linear(inp.spec(), colorspace)
    finally:
        inp.close()
    if linear:
        return "scene-linear, clamped to 0..1 and sRGB-encoded"
    return "taken as display-referred (clamped to 0..1; no log conversion)"


# ---------------------------------------------------------------------------------------------------
# what Pillow reads (moved from inputs.py)


def _to_rgb(im, path) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8; high bit depths are scaled (65535 -> 255), never clipped."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            peak = 1.0 if a.size and np.nanmax(a) <= 1.0 else 255.0
        else:  # 16-bit data (PIL keeps 16-bit greyscale as I;16 or I)
            peak = 65535.0 if mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
        grey = np.clip(np.rint(np.nan_to_num(a) * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # avoids PIL's palette-transparency warning; alpha is dropped below
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")  # alpha is dropped (not composited), as the official loader does
        except (ValueError, OSError) as exc:
            raise BadInputError(f"{path}: colour mode {mode} is not supported ({exc}); {_CONVERT_HINT}") from None
    return np.array(im, dtype=np.uint8)


def read_with_pillow(path, exif_transpose: bool = True) -> np.ndarray:
    """One image file Pillow reads -> HxWx3 uint8 RGB (8-bit data as stored, 16-bit reduced by Pillow);
    a TIFF Pillow cannot decode (float, 32-bit) goes to OpenImageIO when it is installed."""
    # imported here, not at the top: the extension reads this module's constants inside Blender,
    # whose Python has no PIL
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadInputError(f"{path}: file not found; check the path")
    if os.path.isdir(path):
        raise BadInputError(f"{path} is a folder, not an image; pass the image files or give the folder as the input")
    if os.path.getsize(path) == 0:
        raise BadInputError(f"{path} is empty (0 bytes); copy or export the image again")
    try:
        with Image.open(path) as im:
            im.load()  # full decode: truncated or corrupt data fails here
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            return _to_rgb(im, path)
    except DA3Error:
        raise
    except UnidentifiedImageError:
        if _ext(path) in (".tif", ".tiff") and importlib.util.find_spec("OpenImageIO") is not None:
            return read_plate(path)  # float or 32-bit TIFF plates
        from .paths import IMAGE_EXTENSIONS

        if _ext(path) in IMAGE_EXTENSIONS:
            raise BadInputError(f"{path} is damaged or not really a {_ext(path)} file; export or copy it again") from None
        hint = "HEIC is not supported, export it as JPEG" if _ext(path) in (".heic", ".heif", ".avif") else _CONVERT_HINT
        raise BadInputError(f"{path} is not an image that can be read; {hint}") from None
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"{path} is too large to load safely ({exc}); scale it down first") from None
    except MemoryError:
        raise BadInputError(f"{path} is too large to load in memory; scale it down first") from None
    except Exception as exc:  # OSError (truncated), SyntaxError / zlib.error / ValueError (corrupt)
        raise BadInputError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); export or copy it again") from None
