"""Bit-packed XNOR-popcount CPU inference of a W1A1 ensemble, bit-exact with :class:`GoldenModel`.

The strongest honest CPU binary inference buildable here, for ``bebert bench``: the same integer
network as :class:`bebert.golden.infer.GoldenModel` (W1A1 / ``bebert-int`` version 1 files) on
64-bit packed words, in hand-written C (``golden/_bitpacked.c``). Hand-written because no library
does binary BERT inference: BLAS, torch and onnxruntime multiply floats or 8-bit integers, none
has a 1-bit XNOR-popcount GEMM, the binary attention or the project's integer LayerNorm.

What runs where:

- C (OpenMP, ``threads`` per call): embeddings, every LayerNorm, the Q/K/V and FFN binary
  linears with their thresholds, Bi-Attention, the output projections with residual adds. The
  popcounts are AVX2 nibble look-ups (``vpshufb`` + ``vpsadbw``, 4 weight rows per 256-bit
  register, 4 tokens x 8 rows per tile) where the build machine has AVX2, else
  ``__builtin_popcountll`` (``kernel="scalar"`` selects it anyway);
- NumPy, the golden functions themselves: input checks (``GoldenModel``'s, so the errors are the
  same), the pooler (one token per sequence), tanh table, classifier and ensemble combine.

The library is compiled on first use with ``cc -O3 -march=native -mpopcnt -fwrapv -fopenmp -shared`` into
``<cache>/bitpacked/`` (:func:`bebert.toolchain.cache_dir`: ``.cache/`` or ``$BEBERT_CACHE``), named by
a hash of the source, the flags, the compiler and this CPU, written to a temporary file and renamed,
then loaded with cffi (ABI mode). ``$CC`` picks the compiler.

Tested equal, exact integers, to the golden model's logits, member logits and last-layer outputs
(``tests/test_bitpacked.py``).
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from .format import IntModel, load_int_model
from .infer import GoldenModel, GoldenOutput
from .intops import align_add, pack_rows, xnor_popcount
from .threshold import score_threshold

__all__ = ["BitPackedModel", "BitPackedError", "load_library", "CFLAGS", "KERNELS"]

_SOURCE = Path(__file__).with_name("_bitpacked.c")
# -fwrapv: int64 arithmetic wraps as NumPy's does (the contract's widths never reach it; no undefined behaviour)
CFLAGS = ("-O3", "-march=native", "-mpopcnt", "-fwrapv", "-fopenmp", "-fPIC", "-shared", "-std=c11")
#: Popcount kernels: ``avx2`` (the default where the build has AVX2) and ``scalar``.
KERNELS = {"scalar": 0, "avx2": 1}

def _cdef(source: str) -> str:
    """The C file's interface block (types and prototypes), for cffi: written once, in the C file."""
    start, end = source.index("/* BEGIN CDEF"), source.index("/* END CDEF */")
    return source[source.index("*/", start) + 2: end]


_ERRORS = {1: "LayerNorm variance overflows the 62-bit integer range", 2: "out of memory in the bit-packed engine",
           3: "bad arguments to the bit-packed engine"}


class BitPackedError(RuntimeError):
    """The C library cannot be built or loaded (the message has the compiler's output)."""


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU model and flags (a cache shared by machines stays safe)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
    return platform.machine() + "\n" + "\n".join(keep)


def _compiler() -> str:
    return os.environ.get("CC") or "cc"


@lru_cache(maxsize=1)
def load_library():
    """``(ffi, lib)``: the compiled C library, built into the cache on first use.

    Raises
    ------
    BitPackedError
        When no C compiler is found or the build fails.
    """
    import cffi

    from bebert.toolchain import cache_dir

    cc = _compiler()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BitPackedError(f"no C compiler for the bit-packed engine ({cc!r}: {e}); install gcc or set $CC") from None
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([src, " ".join(CFLAGS).encode(), version.encode(), _cpu_id().encode()]))
    folder = cache_dir("bitpacked")
    lib_path = folder / f"bitpacked-{key.hexdigest()[:16]}.so"
    if not lib_path.is_file():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{lib_path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            res = subprocess.run([cc, *CFLAGS, str(_SOURCE), "-o", tmp], capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                raise BitPackedError(f"building {_SOURCE.name} failed ({cc} {' '.join(CFLAGS)}):\n"
                                     f"{res.stdout}{res.stderr}".rstrip())
            os.replace(tmp, lib_path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    ffi = cffi.FFI()
    ffi.cdef(_cdef(src.decode()))
    return ffi, ffi.dlopen(str(lib_path))


def _pad_rows(w: np.ndarray, mult: int) -> np.ndarray:
    rows = -(-w.shape[0] // mult) * mult
    out = np.zeros((rows,) + w.shape[1:], dtype=w.dtype)
    out[: w.shape[0]] = w
    return out


def _interleave(bits: np.ndarray) -> np.ndarray:
    """Packed weight rows ``(P, nw)`` -> ``(Ppad/4, nw, 4)``, ``Ppad`` a multiple of 8, padding rows zero."""
    w = _pad_rows(np.ascontiguousarray(bits, dtype=np.uint64), 8)
    return np.ascontiguousarray(w.reshape(w.shape[0] // 4, 4, w.shape[1]).transpose(0, 2, 1))


def _thr(thr: np.ndarray, pol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds (int64) and polarity bits (one byte per 8 channels, bit ``p % 8`` of byte ``p // 8``),
    padded to a multiple of 8 channels; a padding channel (threshold above every count, polarity 1)
    gives bit 0."""
    n = -(-thr.shape[0] // 8) * 8
    t = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    p = np.ones(n, dtype=np.uint8)
    t[: thr.shape[0]] = thr
    p[: pol.shape[0]] = np.asarray(pol) != 0
    return t, np.packbits(p, bitorder="little")


def _shifts(terms_frac, out_frac):
    f = max([out_frac, *terms_frac])
    return [f - ft for ft in terms_frac], f - out_frac


class BitPackedModel:
    """A W1A1 integer ensemble on the bit-packed C engine.

    Parameters
    ----------
    model : IntModel or path
        A ``bebert-int`` version 1 (W1A1) model, or the path of its file.
    kernel : str
        ``"avx2"`` (default; falls back to ``"scalar"`` where the build has no AVX2) or ``"scalar"``.

    Raises
    ------
    ValueError
        A W1A4 model (this engine implements the W1A1 backbone), or an unknown kernel.
    BitPackedError
        The C library cannot be built.
    """

    def __init__(self, model, kernel: str = "avx2") -> None:
        if not isinstance(model, IntModel):
            model = load_int_model(model)
        if model.config.get("backbone", "w1a1") != "w1a1":
            raise ValueError(f"the bit-packed engine implements the W1A1 backbone, not {model.config['backbone']!r} "
                             "(use GoldenModel for W1A4 files)")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        self.ffi, self.lib = load_library()
        self.kernel = kernel if (kernel == "scalar" or self.lib.bb_has_avx2()) else "scalar"
        self.model = model
        self.dims = model.dims
        self.fmt = f = model.fmt
        d = self.dims
        h, heads, ffn = d["hidden_size"], d["num_heads"], d["ffn_size"]
        ln = model.meta["ln"]
        mant, pfrac, norm = int(ln["mant_bits"]), int(ln["rsqrt_frac"]), int(ln["norm_frac"])
        smin = (1 - mant) + ((1 - mant) & 1)
        if pfrac + smin // 2 - norm < 0:
            raise ValueError("the bit-packed engine needs rsqrt_frac + (1 - mant_bits) / 2 >= norm_frac")
        fs, fb, fe = f["weight_scale"].frac, f["bias"].frac, f["embedding"].frac
        fr, fl = f["residual"].frac, f["layernorm"].frac
        (ew, et, _), er = _shifts([fs, fe, fe], fr)
        (dd, db), dr = _shifts([fs, fb], fr)
        (ay, ax), ar = _shifts([fr, fl], fr)
        (ln_n, ln_b), ln_r = _shifts([norm + f["ln_weight"].frac, f["ln_bias"].frac], fl)
        c = self.ffi.new("bb_config *")
        vals = dict(hidden=h, heads=heads, head_dim=h // heads, ffn=ffn, layers=d["num_layers"], max_len=d["max_len"],
                    nw_h=-(-h // 64), nw_f=-(-ffn // 64), p_qkv=-(-3 * h // 8) * 8, p_h=-(-h // 8) * 8,
                    p_f=-(-ffn // 8) * 8, score_thr=int(score_threshold(h // heads)),
                    emb_l_word=ew, emb_l_tab=et, emb_r=er, dense_l_dot=dd, dense_l_bias=db, dense_r=dr,
                    add_l_y=ay, add_l_x=ax, add_r=ar, res_lo=f["residual"].qmin, res_hi=f["residual"].qmax,
                    ln_mant=mant, ln_pfrac=pfrac, ln_rbits=int(ln["rsqrt_bits"]), ln_norm=norm,
                    ln_eps=int(model.meta["ln_eps_code"]), ln_l_n=ln_n, ln_l_b=ln_b, ln_r=ln_r,
                    ln_lo=f["layernorm"].qmin, ln_hi=f["layernorm"].qmax)
        # the AVX2 LayerNorm and residual path multiplies 32-bit operands: H * residual code, R, n
        shifts = (ew, et, er, dd, db, dr, ay, ax, ar, ln_n, ln_b, ln_r)
        vals["vec_ok"] = int(h << f["residual"].bits < 1 << 31 and int(ln["rsqrt_bits"]) <= 30
                             and 2 * math.isqrt(h) + 2 < 1 << (30 - norm) and max(shifts) < 63)
        for k, v in vals.items():
            setattr(c, k, int(v))
        self._cfg = c
        self._keep: list = []  # arrays and cdata the C structs point into
        self._cmembers = self.ffi.new("bb_member[]", model.members)
        self._members = [self._member(model.member(m), self._cmembers[m]) for m in range(model.members)]
        self.tanh_c0 = int(model.meta["tanh_c0"])
        self.tanh_table = np.ascontiguousarray(model.tensors["tanh.table"], dtype=np.int64)
        self.ens_w = np.ascontiguousarray(model.tensors["ensemble.weight"], dtype=np.int64)

    # ----------------------------------------------------------------------------- preparing
    def _ptr(self, arr: np.ndarray, ctype: str):
        arr = np.ascontiguousarray(arr)
        self._keep.append(arr)
        buf = self.ffi.from_buffer(arr)
        self._keep.append(buf)
        return self.ffi.cast(ctype, buf)

    def _member(self, t: dict, mem) -> dict:
        i64 = lambda a: self._ptr(np.asarray(a, dtype=np.int64), "int64_t *")  # noqa: E731
        u64 = lambda a: self._ptr(a, "uint64_t *")  # noqa: E731
        nl = self.dims["num_layers"]
        layers = self.ffi.new("bb_layer[]", nl)
        self._keep.append(layers)
        for li in range(nl):
            p = f"layer.{li}."
            L = layers[li]
            qkv = ("query", "key", "value")
            L.qkv_w = u64(_interleave(np.concatenate([t[p + n + ".bits"] for n in qkv])))
            thr, pol = _thr(np.concatenate([t[p + n + ".thr"] for n in qkv]),
                            np.concatenate([t[p + n + ".pol"] for n in qkv]))
            L.qkv_thr, L.qkv_pol = self._ptr(thr, "int64_t *"), self._ptr(pol, "uint8_t *")
            L.o_w, L.o_scale, L.o_bias = u64(_interleave(t[p + "attn_out.bits"])), i64(t[p + "attn_out.scale"]), \
                i64(t[p + "attn_out.bias"])
            L.ln1_g, L.ln1_b = i64(t[p + "attn_ln.gamma"]), i64(t[p + "attn_ln.beta"])
            L.f1_w = u64(_interleave(t[p + "ffn_in.bits"]))
            thr, pol = _thr(t[p + "ffn_in.thr"], t[p + "ffn_in.pol"])
            L.f1_thr, L.f1_pol = self._ptr(thr, "int64_t *"), self._ptr(pol, "uint8_t *")
            L.f2_w, L.f2_scale, L.f2_bias = u64(_interleave(t[p + "ffn_out.bits"])), i64(t[p + "ffn_out.scale"]), \
                i64(t[p + "ffn_out.bias"])
            L.ln2_g, L.ln2_b = i64(t[p + "ffn_ln.gamma"]), i64(t[p + "ffn_ln.beta"])
        mem.word_bits = u64(np.asarray(t["emb.word.bits"], dtype=np.uint64))
        mem.word_scale = i64(t["emb.word.scale"])
        mem.position = i64(t["emb.position"])
        mem.token_type = i64(t["emb.token_type"])
        mem.emb_ln_g, mem.emb_ln_b = i64(t["emb.ln.gamma"]), i64(t["emb.ln.beta"])
        mem.layers = layers
        head = {"pool_w": np.ascontiguousarray(t["pooler.bits"].T), "pool_scale": np.asarray(t["pooler.scale"], np.int64),
                "pool_bias": np.asarray(t["pooler.bias"], np.int64),
                "cls_w": np.asarray(t["classifier.weight"], np.int64), "cls_b": np.asarray(t["classifier.bias"], np.int64)}
        return head

    # ------------------------------------------------------------------------------- forward
    def forward(self, input_ids, attention_mask=None, token_type_ids=None, threads: int = 1,
                hidden: bool = False) -> GoldenOutput:
        """Run the ensemble on a padded batch: :meth:`GoldenModel.forward`'s arguments and result.

        Parameters
        ----------
        threads : int
            OpenMP threads of the C engine (results are identical for any value).
        hidden : bool
            Also return each member's last-layer LayerNorm output as ``taps["m<m>.hidden"]``,
            ``(B, n, H)``, zero at padding (the golden tap ``m<m>.l<L-1>.ffn_ln``).

        Raises
        ------
        GoldenInputError
            The golden model's input errors (same checks, same messages).
        ValueError
            ``threads`` not a positive integer; a LayerNorm overflow (as the golden model).
        """
        if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, not {threads!r}")
        # the golden model's own input checks (they read only .dims): the same errors and messages
        ids, valid, types = GoldenModel._check(self, input_ids, attention_mask, token_type_ids)
        b, n = ids.shape
        flat = valid.reshape(-1)
        rows = np.nonzero(flat)[0]
        tok = np.ascontiguousarray(ids.reshape(-1)[rows], dtype=np.int32)
        pos = np.ascontiguousarray(np.tile(np.arange(n, dtype=np.int32), b)[rows])
        typ = np.ascontiguousarray(types.reshape(-1)[rows], dtype=np.int32)
        starts = np.zeros(b + 1, dtype=np.int64)
        starts[1:] = np.cumsum(valid.sum(1))
        t_count, h = rows.size, self.dims["hidden_size"]
        ffi, lib = self.ffi, self.lib
        f = self.fmt
        taps: dict = {}
        logits = []
        cp = lambda a, ct: ffi.cast(ct, ffi.from_buffer(a))  # noqa: E731
        xs = np.empty((len(self._members), t_count, h), dtype=np.int64)
        err = lib.bb_forward(self._cfg, self._cmembers, len(self._members), t_count, cp(tok, "int32_t *"),
                             cp(pos, "int32_t *"), cp(typ, "int32_t *"), b, cp(starts, "int64_t *"),
                             cp(xs, "int64_t *"), int(threads), KERNELS[self.kernel])
        if err:
            raise ValueError(_ERRORS.get(err, f"bit-packed engine error {err}"))
        for m, mem in enumerate(self._members):
            x = xs[m]
            if hidden:
                full = np.zeros((b * n, h), dtype=np.int64)
                full[rows] = x
                taps[f"m{m}.hidden"] = full.reshape(b, n, h)
            # pooler on token 0 of each sequence, tanh table, classifier: the golden functions
            x0 = x[starts[:-1]]
            acc = xnor_popcount(pack_rows(x0 >= 0), mem["pool_w"], h)
            y = align_add([(mem["pool_scale"] * (2 * acc - h), f["weight_scale"].frac),
                           (mem["pool_bias"], f["bias"].frac)], f["residual"])
            p = self.tanh_table[np.clip(y - self.tanh_c0, 0, self.tanh_table.size - 1)]
            logits.append(align_add([(p @ mem["cls_w"].T, f["pooler"].frac + f["classifier_weight"].frac),
                                     (mem["cls_b"], f["logits"].frac)], f["logits"]))
        logits = np.stack(logits)
        total = (self.ens_w[:, None, None] * logits).sum(0)
        combined = align_add([(total, f["ensemble_weight"].frac + f["logits"].frac)], f["logits"])
        return GoldenOutput(combined, logits, np.argmax(combined, axis=-1).astype(np.int64), taps)

    __call__ = forward

    def predict(self, input_ids, attention_mask=None, token_type_ids=None, threads: int = 1) -> np.ndarray:
        """Predicted class per sequence."""
        return self.forward(input_ids, attention_mask, token_type_ids, threads=threads).predictions

    def xnor_gemm(self, a: np.ndarray, w: np.ndarray, k: int, threads: int = 1) -> np.ndarray:
        """XNOR counts ``popcount(~(a[t] ^ w[p]))`` over ``k`` bits of packed ``a (T, nw)``, ``w (P, nw)``
        (padding bits zero): the C GEMM alone, ``int32 (T, P)`` (for tests and speed checks)."""
        a = np.asarray(a, dtype=np.uint64)
        w = np.asarray(w, dtype=np.uint64)
        if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
            raise ValueError(f"a (T, nw) and w (P, nw) must have the same words, not {a.shape} and {w.shape}")
        t, p = a.shape[0], w.shape[0]
        ap = _pad_rows(a, 4)
        wi = _interleave(w)
        acc = np.empty((ap.shape[0], wi.shape[0] * 4), dtype=np.int32)
        ffi = self.ffi
        err = self.lib.bb_xnor_gemm(ffi.cast("uint64_t *", ffi.from_buffer(ap)), ap.shape[0], a.shape[1],
                                    ffi.cast("uint64_t *", ffi.from_buffer(wi)), acc.shape[1], int(k),
                                    ffi.cast("int32_t *", ffi.from_buffer(acc)), int(threads), KERNELS[self.kernel])
        if err:
            raise ValueError(_ERRORS.get(err, f"bit-packed engine error {err}"))
        return acc[:t, :p]

