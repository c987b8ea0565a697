"""`unimiss models`: list, describe, import, export and remove model packages."""
from __future__ import annotations


def _list(args) -> int:
    from .package import printable
    from .registry import list_models, user_models_dir

    packages = list_models()
    if not packages:
        print(f"no models installed; add one with `unimiss models import PATH` (user models: {user_models_dir()})")
        return 0
    rows = [("REFERENCE", "DIM", "MODALITY", "LABELS", "SOURCE")]
    for p in packages:
        source = ("built-in" + (", default" if p.meta.get("default") else "")) if p.is_builtin else "user"
        rows.append((p.reference, f"{p.dimension}D", printable(p.modality), str(len(p.meta["labels"])), source))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _info(args) -> int:
    from .registry import resolve_model

    print(resolve_model(args.ref).describe())
    return 0


def _import(args) -> int:
    from .registry import import_model

    package = import_model(args.path, replace=args.replace)
    print(f"installed {package.reference} in {package.root}")
    return 0


def _export(args) -> int:
    from .registry import export_model

    print(f"wrote {export_model(args.ref, args.output)}")
    return 0


def _remove(args) -> int:
    from .registry import remove_model

    print(f"removed {remove_model(args.ref)}")
    return 0


def add_models_parser(subparsers):
    """Add the `models` command to an argparse subparsers object; returns its parser."""
    models = subparsers.add_parser("models", help="list, inspect, import, export and remove model packages")
    commands = models.add_subparsers(dest="models_command", required=True)
    commands.add_parser("list", help="the built-in and user models").set_defaults(func=_list)
    info = commands.add_parser("info", help="describe one model")
    info.add_argument("ref", metavar="REF", help="name, name@version, or a package folder or .zip")
    info.set_defaults(func=_info)
    imp = commands.add_parser("import", help="check a package and install it as a user model")
    imp.add_argument("path", metavar="PATH", help="package folder or .zip")
    imp.add_argument("--replace", action="store_true", help="overwrite an installed model of the same name@version")
    imp.set_defaults(func=_import)
    export = commands.add_parser("export", help="write a model as a .zip package")
    export.add_argument("ref", metavar="REF", help="name, name@version, or a package folder or .zip")
    export.add_argument("output", metavar="OUTPUT.zip", help="the file to write (or a folder to write it in)")
    export.set_defaults(func=_export)
    remove = commands.add_parser("remove", help="delete an installed user model")
    remove.add_argument("ref", metavar="REF", help="name or name@version")
    remove.set_defaults(func=_remove)
    return models
