"""``da3 export RESULT.npz``: a kept result in other formats, no model run."""

from __future__ import annotations

import os

from .. import options as opt


def add_parser(sub, common) -> None:
    p = sub.add_parser("export", parents=[common], help="export a kept result (.npz) again (model options unused)")
    p.add_argument("input", metavar="RESULT.npz")
    p.add_argument("--usd-format", choices=opt.choice_ids(opt.USD_FILE_FORMATS), default=opt.DEFAULT_USD_FILE_FORMAT)


def export_result(args) -> int:
    """``da3 export RESULT.npz``: a kept result (the worker's, the npz export, official DA3) in other formats.
    A damaged file is one line (``prediction.load_result``), before any file is written."""
    from .. import exports
    from ..matchmove.steps import after_inference, options_from_args
    from ..prediction import load_result

    formats = exports.parse_formats(args.export_format)
    # exports.export checks everything, then makes the folder; issue 27: the floor, the mesh, --up-axis/--camera-height
    pred = after_inference(load_result(args.input), lambda *a: None, formats=formats, **options_from_args(args))
    files = exports.export(pred, export_format="-".join(formats), export_dir=args.export_dir,
                           conf_thresh_percentile=args.conf_thresh_percentile, num_max_points=args.num_max_points,
                           show_cameras=args.show_cameras, usd_format=args.usd_format) or []
    print(f"da3: {args.input} -> {os.path.abspath(args.export_dir)} ({len(files)} file{'s' * (len(files) != 1)})")
    for f in files:
        print(f"  {f}")
    return 0
