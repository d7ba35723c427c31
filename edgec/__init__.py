"""edgec: compile trained neural networks for edge devices, checking the numbers after every step."""

__version__ = "0.1.0"


def compile(model, target="x86-64", opt=None, passes=None, output_dir=None, **options):  # noqa: A001
    """Compile `model` for `target`; mirrors the `edgec` command (see edgec.compiler.compile)."""
    from edgec.compiler import compile as _compile

    return _compile(model, target=target, opt=opt, passes=passes, output_dir=output_dir, **options)
