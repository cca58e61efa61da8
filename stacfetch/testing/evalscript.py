"""The evalscript subset the emulator understands, run vectorised with numpy.

The emulator cannot run JavaScript. It parses a small, well-defined part of Evalscript V3
and evaluates it over whole arrays at once:

* The first non-blank line must be ``//VERSION=3``. Comments (``//``, ``/* */``) are ignored.
* Top level: only ``function`` declarations. ``setup()`` and ``evaluatePixel(sample)`` are
  required; ``updateOutputMetadata`` is ignored; ``updateOutput`` and ``preProcessScenes`` are
  refused.
* ``setup()`` returns an object literal (``let``/``const`` of literals before it are allowed):
  ``input`` is a list of band names or of ``{bands: [...], units: "DN" | "REFLECTANCE" | [...]}``
  (units checked per band against :mod:`.s2bands`: CLD/SNW only PERCENT, SCL/CLP/CLM only DN);
  ``output`` is one or a list of ``{id?, bands, sampleType?, nodataValue?}``; ``sampleType`` is a
  string or ``SampleType.X`` (INT8, UINT8, INT16, UINT16, FLOAT32, AUTO); ``mosaicking`` may
  only be ``SIMPLE``.
* ``evaluatePixel(sample)`` holds ``let/const/var NAME = expr``, ``if (cond) ... else ...``
  (each branch must end in ``return`` when the condition varies per pixel) and ``return``.
  Expressions: numbers, ``NaN``, ``sample.BAND`` (declared inputs only), variables,
  ``+ - * / %``, comparisons, ``== != === !==``, ``&& || !``, ``c ? a : b``, parentheses,
  ``Math.min/max/abs/round/floor/ceil/sqrt/pow``, array literals, and for several outputs an
  object literal keyed by output id. So ``[sample.B04, sample.B03]``,
  ``sample.dataMask ? [sample.B04 * 10000] : [0]``, ``[2.5 * sample.B04 / 10000]`` and the
  NDVI ``(sample.B08 - sample.B04) / (sample.B08 + sample.B04)`` all work.

Anything else raises ``EvalscriptError`` (the Process endpoint answers 400
``RENDERER_EXCEPTION``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .s2bands import S2L2A, check_units

SAMPLE_TYPES = {
    "INT8": "int8",
    "UINT8": "uint8",
    "INT16": "int16",
    "UINT16": "uint16",
    "FLOAT32": "float32",
    "AUTO": "uint8",
}


class EvalscriptError(ValueError):
    """The evalscript is invalid or outside the supported subset."""


# ---------------------------------------------------------------------------------- tokens
_TOKEN = re.compile(
    r"""(?P<ws>\s+|//[^\n]*|/\*.*?\*/)
      |(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<name>[A-Za-z_$][\w$]*)
      |(?P<op>===|!==|==|!=|<=|>=|&&|\|\||[{}\[\](),:;.?!<>+\-*/%=])""",
    re.S | re.X,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise EvalscriptError(f"unexpected character {text[pos]!r} on line {line}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    out.append(("end", ""))
    return out


# ---------------------------------------------------------------------------------- parser
class _Parser:
    """Recursive descent over the token list; produces tuples as AST nodes."""

    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self, value: str) -> bool:
        k, v = self.toks[self.i]
        return v == value and k in ("op", "name")

    def next(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        k, v = self.next()
        if v != value or k == "str":
            raise EvalscriptError(f"expected {value!r} but found {v or 'end of script'!r}")

    def accept(self, value: str) -> bool:
        if self.toks[self.i][1] == value and self.toks[self.i][0] in ("op", "name"):
            self.i += 1
            return True
        return False

    def name(self) -> str:
        k, v = self.next()
        if k != "name":
            raise EvalscriptError(f"expected a name but found {v or 'end of script'!r}")
        return v

    # program
    def program(self) -> dict[str, tuple[list[str], list]]:
        funcs: dict[str, tuple[list[str], list]] = {}
        while self.toks[self.i][0] != "end":
            if self.accept(";"):
                continue
            if not self.accept("function"):
                raise EvalscriptError(
                    f"only function declarations are supported at the top level, found "
                    f"{self.toks[self.i][1]!r}")
            fname = self.name()
            self.expect("(")
            params: list[str] = []
            while not self.accept(")"):
                params.append(self.name())
                self.accept(",")
            funcs[fname] = (params, self.block())
        return funcs

    def block(self) -> list:
        self.expect("{")
        stmts = []
        while not self.accept("}"):
            if self.toks[self.i][0] == "end":
                raise EvalscriptError("missing '}' at the end of a block")
            stmts.append(self.statement())
        return stmts

    def statement(self) -> tuple:
        if self.accept(";"):
            return ("empty",)
        if self.peek("{"):
            return ("block", self.block())
        if self.accept("return"):
            expr = None if self.peek(";") or self.peek("}") else self.expr()
            self.accept(";")
            return ("return", expr)
        for word in ("let", "const", "var"):
            if self.accept(word):
                decls = []
                while True:
                    var = self.name()
                    self.expect("=")
                    decls.append((var, self.expr()))
                    if not self.accept(","):
                        break
                self.accept(";")
                return ("let", decls)
        if self.accept("if"):
            self.expect("(")
            cond = self.expr()
            self.expect(")")
            then = self.statement()
            other = self.statement() if self.accept("else") else None
            return ("if", cond, then, other)
        k, v = self.toks[self.i]
        if k == "name" and self.toks[self.i + 1][1] == "=":
            self.i += 2
            expr = self.expr()
            self.accept(";")
            return ("let", [(v, expr)])
        raise EvalscriptError(f"unsupported statement starting with {v!r}")

    # expressions, lowest precedence first
    def expr(self) -> tuple:
        cond = self.binary(0)
        if self.accept("?"):
            a = self.expr()
            self.expect(":")
            b = self.expr()
            return ("cond", cond, a, b)
        return cond

    _LEVELS = (("||",), ("&&",), ("==", "!=", "===", "!=="), ("<", ">", "<=", ">="),
               ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> tuple:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.toks[self.i][0] == "op" and self.toks[self.i][1] in self._LEVELS[level]:
            op = self.next()[1]
            left = ("bin", op, left, self.binary(level + 1))
        return left

    def unary(self) -> tuple:
        if self.toks[self.i][0] == "op" and self.toks[self.i][1] in ("!", "-", "+"):
            op = self.next()[1]
            return ("unary", op, self.unary())
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.primary()
        while True:
            if self.accept("."):
                node = ("member", node, self.name())
            elif self.accept("["):
                node = ("index", node, self.expr())
                self.expect("]")
            elif self.accept("("):
                args = []
                while not self.accept(")"):
                    args.append(self.expr())
                    self.accept(",")
                node = ("call", node, args)
            else:
                return node

    def primary(self) -> tuple:
        k, v = self.next()
        if k == "num":
            return ("num", float(v))
        if k == "str":
            return ("str", v[1:-1])
        if k == "name":
            return ("name", v)
        if v == "(":
            e = self.expr()
            self.expect(")")
            return e
        if v == "[":
            items = []
            while not self.accept("]"):
                items.append(self.expr())
                self.accept(",")
            return ("array", items)
        if v == "{":
            pairs = []
            while not self.accept("}"):
                kk, key = self.next()
                if kk not in ("name", "str", "num"):
                    raise EvalscriptError(f"bad object key {key!r}")
                key = key[1:-1] if kk == "str" else key
                self.expect(":")
                pairs.append((key, self.expr()))
                self.accept(",")
            return ("object", pairs)
        raise EvalscriptError(f"unexpected {v or 'end of script'!r} in an expression")


# ------------------------------------------------------------------------------- setup()
_CONSTANTS = {"true": True, "false": False, "null": None, "undefined": None}


def _literal(node: tuple, env: dict[str, Any]) -> Any:
    """Evaluate a constant expression of setup()."""
    kind = node[0]
    if kind in ("num", "str"):
        return node[1]
    if kind == "name":
        if node[1] in env:
            return env[node[1]]
        if node[1] in _CONSTANTS:
            return _CONSTANTS[node[1]]
        raise EvalscriptError(f"{node[1]} is not defined in setup()")
    if kind == "member":  # SampleType.UINT16, MosaickingType.SIMPLE ...
        return node[2]
    if kind == "array":
        return [_literal(n, env) for n in node[1]]
    if kind == "object":
        return {k: _literal(v, env) for k, v in node[1]}
    if kind == "unary" and node[1] == "-":
        return -_literal(node[2], env)
    raise EvalscriptError("setup() must return plain values (strings, numbers, lists, objects)")


@dataclass(frozen=True)
class Output:
    id: str
    bands: int
    sample_type: str  # INT8 ... AUTO
    nodata: float | None

    @property
    def dtype(self) -> str:
        return SAMPLE_TYPES[self.sample_type]


Sampler = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class Evalscript:
    """A parsed evalscript: its inputs (band -> units), outputs, and its pixel function."""

    units: dict[str, str]
    outputs: tuple[Output, ...]
    _param: str
    _body: tuple

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.units)

    def output(self, identifier: str = "default") -> Output:
        for out in self.outputs:
            if out.id == identifier:
                return out
        raise EvalscriptError(f"the evalscript has no output with id {identifier!r}")

    def evaluate(self, sample: Sampler) -> dict[str, list[Any]]:
        """Run evaluatePixel over whole arrays; returns output id -> list of band values."""
        with np.errstate(all="ignore"):
            value = _Runner(self, sample).run(list(self._body), {})
        if isinstance(value, dict):
            result = value
        elif isinstance(value, list):
            if len(self.outputs) != 1:
                raise EvalscriptError(
                    "evaluatePixel returned an array but setup() declares several outputs; "
                    "return an object keyed by output id")
            result = {self.outputs[0].id: value}
        else:
            raise EvalscriptError("evaluatePixel must return an array (or an object of arrays)")
        for out in self.outputs:
            got = result.get(out.id)
            if not isinstance(got, list):
                raise EvalscriptError(f"evaluatePixel returned nothing for output {out.id!r}")
            if len(got) != out.bands:
                raise EvalscriptError(
                    f"output {out.id!r} declares {out.bands} bands but evaluatePixel returned "
                    f"{len(got)} values")
        return result


def parse(text: str) -> Evalscript:
    """Parse ``text``; raises EvalscriptError with a readable message."""
    if not isinstance(text, str) or not text.strip():
        raise EvalscriptError("evalscript is missing or empty")
    first = text.strip().splitlines()[0].replace(" ", "")
    if first != "//VERSION=3":
        raise EvalscriptError("only evalscript V3 is supported: the first line must be //VERSION=3")
    funcs = _Parser(text).program()
    for name in ("updateOutput", "preProcessScenes"):
        if name in funcs:
            raise EvalscriptError(f"{name}() is not supported by the emulator")
    if "setup" not in funcs or "evaluatePixel" not in funcs:
        raise EvalscriptError("the evalscript needs both setup() and evaluatePixel()")
    config = _run_setup(funcs["setup"][1])
    units = _inputs(config.get("input"))
    outputs = _outputs(config.get("output"))
    mosaicking = config.get("mosaicking", "SIMPLE")
    if mosaicking != "SIMPLE":
        raise EvalscriptError(f"mosaicking {mosaicking!r} is not supported (only SIMPLE)")
    params, body = funcs["evaluatePixel"]
    if not params:
        raise EvalscriptError("evaluatePixel needs a parameter (the sample)")
    return Evalscript(units, outputs, params[0], tuple(body))


def _run_setup(body: list) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for stmt in body:
        if stmt[0] == "let":
            for var, expr in stmt[1]:
                env[var] = _literal(expr, env)
        elif stmt[0] == "return" and stmt[1] is not None:
            config = _literal(stmt[1], env)
            if not isinstance(config, dict):
                raise EvalscriptError("setup() must return an object {input, output}")
            return config
        elif stmt[0] != "empty":
            raise EvalscriptError("setup() may only declare constants and return an object")
    raise EvalscriptError("setup() does not return anything")


def _inputs(spec: Any) -> dict[str, str]:
    if spec is None:
        raise EvalscriptError("setup() must declare input bands")
    groups = spec if isinstance(spec, list) else [spec]
    units: dict[str, str] = {}
    for group in groups:
        if isinstance(group, str):
            names, unit = [group], None
        elif isinstance(group, dict):
            names, unit = group.get("bands"), group.get("units")
            if not isinstance(names, list) or not names:
                raise EvalscriptError("each input object needs a non-empty 'bands' list")
        else:
            raise EvalscriptError("input must be a list of band names or {bands, units} objects")
        unit_list = unit if isinstance(unit, list) else [unit] * len(names)
        if len(unit_list) != len(names):
            raise EvalscriptError("'units' must be one string or one per band")
        for name, u in zip(names, unit_list, strict=False):
            band = S2L2A.get(str(name))
            if band is None:
                known = ", ".join(S2L2A)
                raise EvalscriptError(f"unknown band {name!r} for sentinel-2-l2a; known: {known}")
            chosen = check_units(band.name, u)  # UnitsError: the service's own message
            units[band.name] = chosen
    return units


def _outputs(spec: Any) -> tuple[Output, ...]:
    if spec is None:
        raise EvalscriptError("setup() must declare an output")
    outs = []
    for o in spec if isinstance(spec, list) else [spec]:
        if not isinstance(o, dict):
            raise EvalscriptError("output must be an object {id, bands, sampleType}")
        bands = o.get("bands", 1)
        if not isinstance(bands, (int, float)) or int(bands) != bands or bands < 1:
            raise EvalscriptError(f"output bands must be a positive integer, got {bands!r}")
        st = str(o.get("sampleType", "AUTO")).upper()
        if st not in SAMPLE_TYPES:
            raise EvalscriptError(f"unknown sampleType {st!r}; use one of " + ", ".join(SAMPLE_TYPES))
        nodata = o.get("nodataValue")
        if nodata is not None and not isinstance(nodata, (int, float)):
            raise EvalscriptError("nodataValue must be a number")
        outs.append(Output(str(o.get("id", "default")), int(bands), st, nodata))
    ids = [o.id for o in outs]
    if len(set(ids)) != len(ids):
        raise EvalscriptError("output ids must be unique")
    return tuple(outs)


# --------------------------------------------------------------------------- evaluatePixel
_MATH: dict[str, Callable[..., Any]] = {
    "min": np.minimum, "max": np.maximum, "abs": np.abs, "round": lambda x: np.floor(np.add(x, 0.5)),
    "floor": np.floor, "ceil": np.ceil, "sqrt": np.sqrt, "pow": np.power,
}
_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "%": np.fmod,
    "<": np.less, ">": np.greater, "<=": np.less_equal, ">=": np.greater_equal,
    "==": np.equal, "===": np.equal, "!=": np.not_equal, "!==": np.not_equal,
}


def _truth(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        if x.dtype == bool:
            return x
        if x.dtype.kind == "f":
            return (x != 0) & ~np.isnan(x)
        return x != 0
    if isinstance(x, (list, dict)):
        return True
    return bool(x) and x == x  # NaN is falsy


def _is_uniform(mask: Any) -> bool | None:
    """True/False when a condition is the same everywhere, else None."""
    if not isinstance(mask, np.ndarray):
        return bool(mask)
    if mask.all():
        return True
    if not mask.any():
        return False
    return None


def _select(mask: Any, a: Any, b: Any) -> Any:
    """Per-pixel choice between two evaluated values of the same shape (lists/dicts too)."""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise EvalscriptError("both branches must return arrays of the same length")
        return [_select(mask, x, y) for x, y in zip(a, b, strict=False)]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            raise EvalscriptError("both branches must return the same outputs")
        return {k: _select(mask, a[k], b[k]) for k in a}
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        raise EvalscriptError("a per-pixel condition must choose between values of the same kind")
    return np.where(mask, a, b)


class _Runner:
    def __init__(self, script: Evalscript, sample: Sampler) -> None:
        self.script = script
        self.sample = sample

    def run(self, stmts: list, env: dict[str, Any]) -> Any:
        """Execute statements until a return; returns its value."""
        env = dict(env)
        for idx, stmt in enumerate(stmts):
            kind = stmt[0]
            if kind == "empty":
                continue
            if kind == "let":
                for var, expr in stmt[1]:
                    env[var] = self.eval(expr, env)
            elif kind == "return":
                if stmt[1] is None:
                    raise EvalscriptError("evaluatePixel must return a value")
                return self.eval(stmt[1], env)
            elif kind == "block":
                return self.run(list(stmt[1]) + stmts[idx + 1:], env)
            elif kind == "if":
                _, cond, then, other = stmt
                rest = stmts[idx + 1:]
                mask = _truth(self.eval(cond, env))
                uniform = _is_uniform(mask)
                then_stmts = [then] + rest
                else_stmts = ([other] if other is not None else []) + rest
                if uniform is True:
                    return self.run(then_stmts, env)
                if uniform is False:
                    return self.run(else_stmts, env)
                return _select(mask, self.run(then_stmts, env), self.run(else_stmts, env))
            else:
                raise EvalscriptError(f"unsupported statement {kind!r}")
        raise EvalscriptError("evaluatePixel ended without returning a value")

    def eval(self, node: tuple, env: dict[str, Any]) -> Any:
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "str":
            raise EvalscriptError("strings cannot be used in evaluatePixel")
        if kind == "name":
            name = node[1]
            if name in env:
                return env[name]
            if name == "NaN":
                return float("nan")
            if name == "Infinity":
                return float("inf")
            if name in ("true", "false"):
                return name == "true"
            raise EvalscriptError(f"{name} is not defined")
        if kind == "member":
            target, attr = node[1], node[2]
            if target == ("name", self.script._param):
                if attr not in self.script.units:
                    raise EvalscriptError(
                        f"{self.script._param}.{attr} is used but {attr} is not among the input bands "
                        "declared in setup()")
                return self.sample(attr)
            raise EvalscriptError("only sample.BAND and Math.fn(...) are supported")
        if kind == "call":
            callee, args = node[1], node[2]
            if callee[0] == "member" and callee[1] == ("name", "Math") and callee[2] in _MATH:
                values = [self.eval(a, env) for a in args]
                fn = _MATH[callee[2]]
                if callee[2] in ("min", "max"):
                    out = values[0]
                    for v in values[1:]:
                        out = fn(out, v)
                    return out
                return fn(*values)
            raise EvalscriptError("the only functions supported are Math.min/max/abs/round/floor/ceil/sqrt/pow")
        if kind == "array":
            return [self.eval(n, env) for n in node[1]]
        if kind == "object":
            return {k: self.eval(v, env) for k, v in node[1]}
        if kind == "unary":
            x = self.eval(node[2], env)
            if node[1] == "!":
                t = _truth(x)
                return ~t if isinstance(t, np.ndarray) else not t
            if node[1] == "-":
                return np.negative(x) if isinstance(x, np.ndarray) else -x
            return x
        if kind == "bin":
            op = node[1]
            a = self.eval(node[2], env)
            if op in ("&&", "||"):
                b = self.eval(node[3], env)
                ta, tb = _truth(a), _truth(b)
                return (ta & tb) if op == "&&" else (ta | tb)
            b = self.eval(node[3], env)
            if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
                raise EvalscriptError("arithmetic on arrays is not supported; compute each value")
            return _BINOPS[op](_num(a), _num(b))
        if kind == "cond":
            mask = _truth(self.eval(node[1], env))
            uniform = _is_uniform(mask)
            if uniform is True:
                return self.eval(node[2], env)
            if uniform is False:
                return self.eval(node[3], env)
            return _select(mask, self.eval(node[2], env), self.eval(node[3], env))
        if kind == "index":
            raise EvalscriptError("indexing is not supported in evaluatePixel")
        raise EvalscriptError(f"unsupported expression {kind!r}")


def _num(x: Any) -> Any:
    """Arrays to float64 before arithmetic: JavaScript numbers are doubles."""
    if isinstance(x, np.ndarray) and x.dtype != np.float64:
        return x.astype(np.float64)
    return x
