"""Vector unit: fixed-point scale and bias, residual add, LayerNorm and sign, one element per cycle.

The arithmetic contract is :func:`bebert.golden.vector.vector_step` (``docs/arithmetic.md``
sections 3, 4, 6 and 7).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ..golden.vector import VectorFormats, stats_engine, stats_widths
from ._params import check_positive

__all__ = ["VectorLoad", "VectorInput", "VectorOutput", "VectorInputs", "VectorOutputs", "VectorUnit"]

#: Operand split of the wide products: low parts of 17 unsigned bits fit an 18x18 signed multiplier.
_SPLIT = 17


class VectorLoad(data.StructLayout):
    """A ``p_stream`` beat: the parameters of one channel.

    Fields
    ------
    addr : channel index ``i``.
    scale, bias : ``alpha_i`` and the bias of the binary linear layer (their formats' widths).
    gamma, beta : the LayerNorm gain and shift of channel ``i``.
    k : the dot-product length ``K`` of the accumulators (taken from the ``last`` beat).
    last : channel ``addr`` is the last one: the token length is ``H = addr + 1``.
    """

    def __init__(self, fmts: VectorFormats, max_h: int, max_k: int):
        super().__init__({
            "addr": unsigned(bits_for(max_h - 1)),
            "scale": signed(fmts.scale.bits),
            "bias": signed(fmts.bias.bits),
            "gamma": signed(fmts.ln_weight.bits),
            "beta": signed(fmts.ln_bias.bits),
            "k": unsigned(bits_for(max_k)),
            "last": unsigned(1),
        })


class VectorInput(data.StructLayout):
    """An ``i_stream`` beat: one channel of one token.

    Fields
    ------
    acc : the PE array's XNOR popcount ``0..K`` of the channel (``signed(acc_width)``).
    x : the residual-stream code entering the layer (``layernorm`` format).
    """

    def __init__(self, fmts: VectorFormats, acc_width: int):
        super().__init__({"acc": signed(acc_width), "x": signed(fmts.layernorm.bits)})


class VectorOutput(data.StructLayout):
    """An ``o_stream`` beat: one channel of the LayerNorm output.

    Fields
    ------
    y : the new residual-stream code (``layernorm`` format).
    bit : ``y >= 0``, the next binary layer's input bit.
    last : the token's last channel.
    """

    def __init__(self, fmts: VectorFormats):
        super().__init__({"y": signed(fmts.layernorm.bits), "bit": unsigned(1), "last": unsigned(1)})


class VectorInputs(data.StructLayout):
    """A :class:`VectorUnit` ``i_stream`` beat: ``vw`` consecutive channels ``c .. c + vw - 1`` of one token
    (``acc[j]``, ``x[j]`` as in :class:`VectorInput`); for ``vw = 1`` its bits equal :class:`VectorInput`'s."""

    def __init__(self, fmts: VectorFormats, acc_width: int, vw: int = 1):
        super().__init__({"acc": data.ArrayLayout(signed(acc_width), vw),
                          "x": data.ArrayLayout(signed(fmts.layernorm.bits), vw)})


class VectorOutputs(data.StructLayout):
    """A :class:`VectorUnit` ``o_stream`` beat: ``vw`` consecutive channels of the LayerNorm output (``y[j]``,
    ``bit[j]``), ``last`` on the token's last beat; for ``vw = 1`` its bits equal :class:`VectorOutput`'s."""

    def __init__(self, fmts: VectorFormats, vw: int = 1):
        super().__init__({"y": data.ArrayLayout(signed(fmts.layernorm.bits), vw), "bit": unsigned(vw),
                          "last": unsigned(1)})


def _sat(m, dst: Signal, value, fmt) -> None:
    """``dst <= clamp(value, fmt.qmin, fmt.qmax)`` (registered)."""
    m.d.sync += dst.eq(Mux(value > fmt.qmax, fmt.qmax, Mux(value < fmt.qmin, fmt.qmin, value)))


def _split_product(m, a, b, name: str):
    """Register the partial products of ``a * b`` (``a`` split at :data:`_SPLIT` bits).

    Returns ``(hi, lo)`` registers with ``a * b = (hi << _SPLIT) + lo``: each partial product
    fits one 18x18 multiplier and its output register, and the sum is left to the next stage.
    """
    if len(a) <= _SPLIT + 1:
        lo = Signal(signed(len(a) + len(b) + 1), name=f"{name}_lo")
        m.d.sync += lo.eq(a * b)
        return None, lo
    lo = Signal(signed(_SPLIT + len(b) + 1), name=f"{name}_lo")
    hi = Signal(signed(len(a) - _SPLIT + len(b) + 1), name=f"{name}_hi")
    m.d.sync += [lo.eq(a[:_SPLIT] * b), hi.eq(a[_SPLIT:].as_signed() * b)]
    return hi, lo


def _join(hi, lo):
    return lo if hi is None else (hi << _SPLIT) + lo


class VectorUnit(wiring.Component):
    """Scale, bias, residual add, LayerNorm and sign over tokens of ``H`` channels.

    Each ``i_stream`` beat carries ``vw`` consecutive channels ``i`` of one token (one, or a power of
    two dividing ``H``; :class:`VectorInputs`): the XNOR popcount ``acc_i`` of the binary linear layer
    and the residual code ``x_i`` that enters it. Each ``o_stream`` beat gives those channels of the
    token's result (:class:`VectorOutputs`):

        ``y   = align_add([(a_i*(2*acc_i - K), f_scale), (c_i, f_bias)] -> residual)``
        ``s   = align_add([(y, f_res), (x_i, f_ln)] -> residual)``
        ``out = layernorm(s)_i`` (``docs/arithmetic.md`` section 6), ``bit = out >= 0``

    exactly :func:`bebert.golden.vector.vector_step`.

    How: two passes over a token buffer of ``banks`` banks (3). Pass 1 (one channel per cycle)
    computes ``s_i``, writes it into the bank and sums ``S = sum s_i`` and
    ``Q = sum s_i^2``. A serial statistics engine then computes
    ``M = H*Q - S^2 + E`` (shift-and-add, one bit per cycle), normalizes it to the
    16-bit mantissa ``m`` (two bits per cycle) and runs the bit-serial reciprocal
    square root ``R`` with the products updated incrementally (``t^2 m = r^2 m +
    2^(b+1) r m + 4^b m``, three cycles per result bit, no multiplier). Pass 2 (one
    channel per cycle) reads the bank back and computes
    ``n = ((H*s_i - S) * R) >> (rsqrt_frac + shift/2 - norm_frac)`` and the gain and
    shift. With several banks pass 1 of a token overlaps the statistics and pass 2 of the ones before.
    With ``vw > 1`` both passes take ``vw`` channels a cycle (``vw`` copies of their datapath, the
    tables and the buffer split into ``vw`` memories, ``S`` and ``Q`` through adder trees) and the
    statistics engine, shared, is unchanged: the rates below hold with ``H / vw`` for ``H`` in the
    pass lengths.

    Rate and latency (:attr:`stats_cycles`, :attr:`latency`, at most, without
    stalls): the first result of a token reaches the output FIFO
    ``9 + stats_cycles + latency`` cycles after its last input beat was taken, its
    last result ``H - 1`` cycles later (:meth:`token_cycles`: ``2H + 9 +
    stats_cycles + latency`` from its first beat). Sustained (:meth:`token_period`):
    a bank is free again once pass 2 has read it, so ``banks`` tokens take at least
    ``2H + 10 + stats_cycles`` cycles, each pass takes ``H`` and the statistics engine
    ``stats_cycles`` per token: the period is ``max(H, (2H + 10 + stats_cycles) / banks,
    stats_cycles)``; for ``H = 384`` (``stats_cycles = 102``) 384 cycles with three banks, one
    channel per cycle (two banks: 440, 0.87 channels per cycle).

    Parameters (per channel ``alpha``, bias, gain, shift) are written through
    ``p_stream`` (:class:`VectorLoad`), one channel per beat; the beat flagged
    ``last`` sets ``H = addr + 1`` and ``K``. ``p_stream`` is ready only while the
    unit holds no token, and a data beat is never taken in a cycle with a load
    offered, so loads between tokens are always safe.

    The datapath is free running (no clock enables on the pipelines) and pass 2
    issues a read only while the output FIFO is sure to have room (credit).

    Parameters
    ----------
    max_h : int
        Longest token (channels); the buffer holds ``banks`` of them.
    max_k : int
        Longest dot product ``K`` of the accumulators; ``acc`` is ``signed(bits_for(max_k) + 1)``
        (the PE array's ``acc_width``).
    fmts : VectorFormats, optional
        Formats and LayerNorm constants (default :meth:`VectorFormats.default` for ``max_h``).
    banks : int
        Tokens the buffer holds (2 or more; 3 sustains one channel per cycle once ``H >= 10 +
        stats_cycles``).

    Attributes
    ----------
    p_stream : In(stream.Signature(VectorLoad))
    i_stream : In(stream.Signature(VectorInput))
    o_stream : Out(stream.Signature(VectorOutput))
    latency : int
        Cycles of pass 2 from a buffer read to the result at the FIFO input.
    stats_cycles : int
        Cycles of the statistics engine per token (always: the normalization takes ``norm_steps`` cycles
        whatever the variance, its shifts then a wait; :func:`bebert.golden.vector.stats_engine`).
    norm_steps : int
        Normalization cycles (the most shifts it can need, plus one).

    Raises
    ------
    TypeError
        If ``max_h`` or ``max_k`` is not a positive integer.
    ValueError
        If a format is unsigned or the LayerNorm constants give a negative normalization shift.
    """

    def __init__(self, *, max_h: int, max_k: int, fmts: VectorFormats | None = None, banks: int = 3,
                 vw: int = 1):
        self._max_h = check_positive(self, "max_h", max_h)
        self._max_k = check_positive(self, "max_k", max_k)
        if isinstance(vw, bool) or not isinstance(vw, int) or vw < 1 or vw & (vw - 1) or max_h % vw:
            self._MustUse__used = True
            raise ValueError(f"vw (channels a beat) must be a power of two dividing max_h = {max_h}, not {vw!r}")
        self._vw = vw
        if isinstance(banks, bool) or not isinstance(banks, int) or banks < 2:
            self._MustUse__used = True
            raise ValueError(f"banks must be an integer >= 2, not {banks!r}")
        self._banks = banks
        fmts = fmts if fmts is not None else VectorFormats.default(max_h)
        names = ("scale", "bias", "residual", "layernorm", "ln_weight", "ln_bias")
        ln = fmts.ln
        if not all(getattr(fmts, n).signed for n in names) or \
                int(ln["rsqrt_frac"]) - (int(ln["mant_bits"]) - 2) // 2 - int(ln["norm_frac"]) < 0:
            self._MustUse__used = True
            raise ValueError("the vector unit takes signed formats and LayerNorm constants with "
                             "rsqrt_frac - (mant_bits - 2) / 2 >= norm_frac")
        self._fmts = fmts
        self._acc_width = bits_for(max_k) + 1
        self._hb = bits_for(max_h)
        self._s_width, self._q_width, self._m_width = stats_widths(fmts, max_h)
        self._stats_cycles, self._norm_steps = stats_engine(fmts, max_h)
        self._latency = 13
        self._fifo_depth = self._latency + 3
        super().__init__({
            "p_stream": In(stream.Signature(VectorLoad(fmts, max_h, max_k))),
            "i_stream": In(stream.Signature(VectorInputs(fmts, self._acc_width, vw))),
            "o_stream": Out(stream.Signature(VectorOutputs(fmts, vw))),
        })

    max_h = property(lambda self: self._max_h)
    max_k = property(lambda self: self._max_k)
    fmts = property(lambda self: self._fmts)
    acc_width = property(lambda self: self._acc_width)
    latency = property(lambda self: self._latency)
    stats_cycles = property(lambda self: self._stats_cycles)
    norm_steps = property(lambda self: self._norm_steps)
    banks = property(lambda self: self._banks)
    vw = property(lambda self: self._vw)

    def token_period(self, h: int) -> float:
        """Cycles per token sustained without stalls, at most (``banks`` tokens in flight; ``H / vw`` beats a pass)."""
        w = h // self._vw
        return max(w, (2 * w + 10 + self._stats_cycles) / self._banks, self._stats_cycles)

    def token_cycles(self, h: int) -> int:
        """Cycles from a token's first accepted beat to its last result at the FIFO input, at most (no stalls)."""
        return 2 * (h // self._vw) + 9 + self._stats_cycles + self._latency

    def elaborate(self, platform):
        m = Module()
        f, ln = self._fmts, self._fmts.ln
        fs, fb, fr, fl = f.scale.frac, f.bias.frac, f.residual.frac, f.layernorm.frac
        fg, fbeta = f.ln_weight.frac, f.ln_bias.frac
        mant, pfrac = int(ln["mant_bits"]), int(ln["rsqrt_frac"])
        rbits, norm = int(ln["rsqrt_bits"]), int(ln["norm_frac"])
        max_h, hb, vw = self._max_h, self._hb, self._vw
        lw = vw.bit_length() - 1                    # log2 of the lanes: channel c is lane c % vw of word c // vw
        ab = bits_for(max_h // vw - 1)              # word index within a token
        load, ins = self.p_stream, self.i_stream

        # ---- parameter tables and the token buffer (``banks`` banks: bank b, word i at b * 2^ab + i), one
        # memory of each per lane
        nb = self._banks

        def step(bank, last):
            """The bank after ``bank`` when ``last`` (round robin), else ``bank``."""
            return Mux(last, Mux(bank == nb - 1, 0, bank + 1), bank)

        dense_l = data.StructLayout({"scale": signed(f.scale.bits), "bias": signed(f.bias.bits)})
        lnp_l = data.StructLayout({"gamma": signed(f.ln_weight.bits), "beta": signed(f.ln_bias.bits)})
        dense_w, ln_w, buf_w, dense_r, ln_r, buf_r = [], [], [], [], [], []
        for j in range(vw):
            sfx = "" if vw == 1 else str(j)
            m.submodules[f"dense_mem{sfx}"] = dm = Memory(shape=dense_l, depth=max_h // vw, init=[])
            m.submodules[f"ln_mem{sfx}"] = lm = Memory(shape=lnp_l, depth=max_h // vw, init=[])
            m.submodules[f"buf{sfx}"] = bm = Memory(shape=signed(f.residual.bits), depth=nb << ab, init=[])
            dense_w.append(dm.write_port())
            ln_w.append(lm.write_port())
            buf_w.append(bm.write_port())
            dense_r.append(dm.read_port())
            ln_r.append(lm.read_port())
            buf_r.append(bm.read_port())
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(
            width=len(self.o_stream.payload.as_value()), depth=self._fifo_depth)

        h = Signal(range(max_h + 1), init=max_h)    # token length (channels)
        hwl = Signal(range(max_h // vw + 1), init=max_h // vw)     # its words (H / vw)
        k = Signal(range(self._max_k + 1))          # dot-product length of the accumulators
        busy = Signal(nb)      # bank holds a token (first beat taken .. last read issued)
        filled = Signal(nb)    # pass 1 done, statistics pending
        ready = Signal(nb)     # statistics done, pass 2 pending
        pipe_busy = Signal()
        idle = Signal()
        m.d.comb += [idle.eq((busy == 0) & ~pipe_busy), load.ready.eq(idle)]
        lslot = load.payload.addr[:lw] if lw else Const(0)
        for j in range(vw):
            wen = load.valid & idle & (lslot == j)
            m.d.comb += [
                dense_w[j].addr.eq(load.payload.addr >> lw), dense_w[j].data.scale.eq(load.payload.scale),
                dense_w[j].data.bias.eq(load.payload.bias), dense_w[j].en.eq(wen),
                ln_w[j].addr.eq(load.payload.addr >> lw), ln_w[j].data.gamma.eq(load.payload.gamma),
                ln_w[j].data.beta.eq(load.payload.beta), ln_w[j].en.eq(wen),
            ]
        with m.If(load.valid & idle & load.payload.last):
            m.d.sync += [h.eq(load.payload.addr + 1), hwl.eq((load.payload.addr + 1) >> lw), k.eq(load.payload.k)]

        # ---- pass 1: y = scale/bias, s = residual add; buffer write; S and Q (vw channels a beat)
        bw = bits_for(nb - 1)
        ctl_l = data.StructLayout({"valid": 1, "first": 1, "last": 1, "bank": bw, "idx": ab})
        in_bank = Signal(range(nb))
        in_idx = Signal(range(max_h // vw))
        in_last = Signal()
        accept = Signal()
        busy_set = Signal(nb)
        busy_clr = Signal(nb)
        m.d.comb += [
            in_last.eq(in_idx == hwl - 1),
            ins.ready.eq(~load.valid & ((in_idx != 0) | ~busy.bit_select(in_bank, 1))),
            accept.eq(ins.valid & ins.ready),
        ]
        m.d.comb += [x.addr.eq(in_idx) for x in dense_r] + [x.en.eq(1) for x in dense_r]
        with m.If(accept):
            m.d.sync += [in_idx.eq(Mux(in_last, 0, in_idx + 1)), in_bank.eq(step(in_bank, in_last))]
            with m.If(in_idx == 0):
                m.d.comb += busy_set.eq(1 << in_bank)
        c = [Signal(ctl_l, name=f"in_c{i}") for i in range(9)]
        m.d.comb += [c[0].valid.eq(accept), c[0].first.eq(in_idx == 0), c[0].last.eq(in_last),
                     c[0].bank.eq(in_bank), c[0].idx.eq(in_idx)]
        for i in range(1, 9):
            m.d.sync += c[i].eq(c[i - 1])
        f1 = max(fs, fb, fr)
        f2 = max(fr, fl)
        s7s = []
        for j in range(vw):
            def sg(shape, name, **kw):
                return Signal(shape, name=f"{name}" if vw == 1 else f"{name}_{j}", **kw)
            # datapath registers have no reset (no reset logic in front of the flip-flops)
            acc1 = sg(signed(self._acc_width), "acc1", reset_less=True)
            x1 = sg(signed(f.layernorm.bits), "x1", reset_less=True)
            m.d.sync += [acc1.eq(ins.payload.acc[j]), x1.eq(ins.payload.x[j])]
            # stage 2: the table word registered beside the data (memory clock-to-out kept off the math)
            acc2 = sg(signed(self._acc_width), "acc2", reset_less=True)
            x2 = sg(signed(f.layernorm.bits), "x2", reset_less=True)
            p2 = sg(dense_l, "p2", reset_less=True)
            m.d.sync += [acc2.eq(acc1), x2.eq(x1), p2.eq(dense_r[j].data)]
            # stage 3: D = 2*acc - K
            dd3 = sg(signed(self._acc_width + 2), "dd3")
            x3, p3 = sg(signed(f.layernorm.bits), "x3"), sg(dense_l, "p3")
            m.d.sync += [dd3.eq((acc2 << 1) - k), x3.eq(x2), p3.eq(p2)]
            # stage 4: alpha * D (one multiplier)
            ad4 = sg(signed(len(dd3) + f.scale.bits), "ad4")
            bias4, x4 = sg(signed(f.bias.bits), "bias4"), sg(signed(f.layernorm.bits), "x4")
            m.d.sync += [ad4.eq(p3.scale * dd3), bias4.eq(p3.bias), x4.eq(x3)]
            # stage 5: the exact aligned sum on the grid F1
            z5 = sg(signed(max(len(ad4) + f1 - fs, f.bias.bits + f1 - fb) + 1), "z5")
            x5 = sg(signed(f.layernorm.bits), "x5")
            m.d.sync += [z5.eq((ad4 << (f1 - fs)) + (bias4 << (f1 - fb))), x5.eq(x4)]
            # stage 6: floor onto the residual grid, saturate
            y6, x6 = sg(signed(f.residual.bits), "y6"), sg(signed(f.layernorm.bits), "x6")
            _sat(m, y6, z5 >> (f1 - fr), f.residual)
            m.d.sync += x6.eq(x5)
            # stage 7: residual add
            s7 = sg(signed(f.residual.bits), "s7")
            _sat(m, s7, ((y6 << (f2 - fr)) + (x6 << (f2 - fl))) >> (f2 - fr), f.residual)
            m.d.comb += [buf_w[j].addr.eq(Cat(c[7].idx, c[7].bank)), buf_w[j].data.eq(s7), buf_w[j].en.eq(c[7].valid)]
            s7s.append(s7)
        # stage 8: S (the beat's sum), s^2; stage 9: Q. The sums of a finished token are kept per bank.
        s_run = Signal(signed(self._s_width))
        s_next = Signal(signed(self._s_width))
        sqs = [Signal(unsigned(2 * f.residual.bits), name="sq8" if vw == 1 else f"sq8_{j}") for j in range(vw)]
        q_run = Signal(unsigned(self._q_width))
        q_next = Signal(unsigned(self._q_width))
        s_bank = [Signal(signed(self._s_width), name=f"s_bank{b}") for b in range(nb)]
        q_bank = [Signal(unsigned(self._q_width), name=f"q_bank{b}") for b in range(nb)]
        filled_set = Signal(nb)
        filled_clr = Signal(nb)
        m.d.comb += [s_next.eq(Mux(c[7].first, 0, s_run) + _tree_sum(s7s)),
                     q_next.eq(Mux(c[8].first, 0, q_run) + _tree_sum(sqs))]
        m.d.sync += [sq.eq((x * x).as_unsigned()) for sq, x in zip(sqs, s7s)]
        with m.If(c[7].valid):
            m.d.sync += s_run.eq(s_next)
            with m.If(c[7].last):
                for b in range(nb):
                    with m.If(c[7].bank == b):
                        m.d.sync += s_bank[b].eq(s_next)
        with m.If(c[8].valid):
            m.d.sync += q_run.eq(q_next)
            with m.If(c[8].last):
                for b in range(nb):
                    with m.If(c[8].bank == b):
                        m.d.sync += q_bank[b].eq(q_next)
                m.d.comb += filled_set.eq(1 << c[8].bank)
        # ---- statistics engine: M = H*Q - S^2 + E, normalization, reciprocal square root
        st_bank = Signal(range(nb))
        acc_m = Signal(unsigned(self._m_width + 1))
        op_a = Signal(unsigned(self._m_width + 1))
        op_b = Signal(unsigned(max(hb, self._s_width)))
        cnt = Signal(range(max(hb, self._s_width, rbits) + 1))
        sh_s = Signal(signed(bits_for(self._m_width) + 2))      # the even shift s
        nsteps = Signal(range(self._norm_steps))                  # normalization cycles left
        mm = Signal(unsigned(mant))
        rw = max(2 * pfrac, mant + 2 * rbits - 2) + 3
        rp, ra, rb_ = Signal(unsigned(rw)), Signal(unsigned(rw)), Signal(unsigned(rw))
        rt, rcand, rba = Signal(unsigned(rw)), Signal(unsigned(rw)), Signal(unsigned(rw))
        rr = Signal(unsigned(rbits))
        r_bank = [Signal(unsigned(rbits), name=f"r_bank{b}") for b in range(nb)]
        shw = bits_for(pfrac + (self._m_width - mant) // 2 + 2)
        sh_bank = [Signal(unsigned(shw), name=f"sh_bank{b}") for b in range(nb)]
        ready_set = Signal(nb)
        s_abs = Signal(unsigned(self._s_width))
        s_cur = Signal(signed(self._s_width))
        m.d.comb += [s_cur.eq(Array(s_bank)[st_bank]),
                     s_abs.eq(Mux(s_cur < 0, -s_cur, s_cur))]
        with m.FSM(name="stats"):
            with m.State("IDLE"):
                with m.If(filled.bit_select(st_bank, 1)):
                    m.d.sync += [acc_m.eq(f.eps_code), op_a.eq(Array(q_bank)[st_bank]),
                                 op_b.eq(h), cnt.eq(hb)]
                    m.next = "HQ"
            with m.State("HQ"):      # acc += H*Q, one bit of H per cycle
                with m.If(op_b[0]):
                    m.d.sync += acc_m.eq(acc_m + op_a)
                m.d.sync += [op_a.eq(op_a << 1), op_b.eq(op_b >> 1), cnt.eq(cnt - 1)]
                with m.If(cnt == 1):
                    m.d.sync += [op_a.eq(s_abs), op_b.eq(s_abs), cnt.eq(self._s_width)]
                    m.next = "SS"
            with m.State("SS"):      # acc -= S^2, one bit of |S| per cycle (acc stays >= E)
                with m.If(op_b[0]):
                    m.d.sync += acc_m.eq(acc_m - op_a)
                m.d.sync += [op_a.eq(op_a << 1), op_b.eq(op_b >> 1), cnt.eq(cnt - 1)]
                with m.If(cnt == 1):
                    m.d.sync += [sh_s.eq(0), nsteps.eq(self._norm_steps - 1)]
                    m.next = "NORM"
            # M >> s (or << -s), s even, until 2^(mant-2) <= m < 2^mant; always norm_steps cycles (the worst
            # case: the shifts it takes, then a wait), so the engine's time does not depend on the data and
            # the cycle model is exact
            with m.State("NORM"):
                with m.If(nsteps != 0):
                    m.d.sync += nsteps.eq(nsteps - 1)
                with m.If(acc_m >= (1 << mant)):
                    m.d.sync += [acc_m.eq(acc_m >> 2), sh_s.eq(sh_s + 2)]
                with m.Elif(acc_m < (1 << (mant - 2))):
                    m.d.sync += [acc_m.eq(acc_m << 2), sh_s.eq(sh_s - 2)]
                with m.Elif(nsteps == 0):
                    m.d.sync += [mm.eq(acc_m), rp.eq(0), rb_.eq(0), rr.eq(0), cnt.eq(rbits),
                                 ra.eq(acc_m[:mant] << (2 * (rbits - 1)))]
                    m.next = "R0"
            # R, MSB first: keep t = r + 2^b iff t^2 m = P + B + A <= 4^pfrac, where P = r^2 m,
            # B = (r m) << (b+1), A = m << 2b; then B' = B/2 (+ A if kept), A' = A/4.
            with m.State("R0"):
                m.d.sync += rt.eq(rp + ra)
                m.next = "R1"
            with m.State("R1"):
                m.d.sync += [rcand.eq(rt + rb_), rba.eq((rb_ >> 1) + ra)]
                m.next = "R2"
            with m.State("R2"):
                keep = rcand <= (1 << (2 * pfrac))
                m.d.sync += [rp.eq(Mux(keep, rcand, rp)), rb_.eq(Mux(keep, rba, rb_ >> 1)), ra.eq(ra >> 2),
                             rr.eq(Cat(keep, rr[:-1])), cnt.eq(cnt - 1)]
                with m.If(cnt == 1):
                    m.next = "DONE"
                with m.Else():
                    m.next = "R0"
            with m.State("DONE"):
                for b in range(nb):
                    with m.If(st_bank == b):
                        m.d.sync += [r_bank[b].eq(rr), sh_bank[b].eq(pfrac - norm + (sh_s >> 1))]
                m.d.comb += [ready_set.eq(1 << st_bank), filled_clr.eq(1 << st_bank)]
                m.d.sync += st_bank.eq(step(st_bank, 1))
                m.next = "IDLE"

        # ---- pass 2: d = H*s - S, n = (d*R) >> shift, out = sat(n*g + beta), bit = out >= 0 (vw channels a beat)
        out_bank = Signal(range(nb))
        out_idx = Signal(range(max_h // vw))
        out_last = Signal()
        issue = Signal()
        ready_clr = Signal(nb)
        outstanding = Signal(range(self._fifo_depth + 1))
        m.d.comb += [
            out_last.eq(out_idx == hwl - 1),
            issue.eq(ready.bit_select(out_bank, 1) & (outstanding < self._fifo_depth)),
        ]
        m.d.comb += [x.addr.eq(Cat(out_idx, out_bank)) for x in buf_r] + [x.en.eq(1) for x in buf_r]
        m.d.comb += [x.addr.eq(out_idx) for x in ln_r] + [x.en.eq(1) for x in ln_r]
        with m.If(issue):
            m.d.sync += [out_idx.eq(Mux(out_last, 0, out_idx + 1)), out_bank.eq(step(out_bank, out_last))]
            with m.If(out_last):
                m.d.comb += [ready_clr.eq(1 << out_bank), busy_clr.eq(1 << out_bank)]
        m.d.sync += [
            busy.eq((busy | busy_set) & ~busy_clr),
            filled.eq((filled | filled_set) & ~filled_clr),
            ready.eq((ready | ready_set) & ~ready_clr),
        ]
        oc_l = data.StructLayout({"valid": 1, "last": 1, "bank": bw})
        lat = self._latency
        o = [Signal(oc_l, name=f"out_c{i}") for i in range(lat + 1)]
        m.d.comb += [o[0].valid.eq(issue), o[0].last.eq(out_last), o[0].bank.eq(out_bank)]
        for i in range(1, lat + 1):
            m.d.sync += o[i].eq(o[i - 1])

        def per_bank(regs, ctl):
            return Array(regs)[ctl.bank]

        # The per-bank constants (S, R, shift) are selected one stage early and registered, so the
        # bank multiplexer never sits in front of a multiplier or the shifter; the lanes share them.
        s3 = Signal(signed(self._s_width))
        r4 = Signal(unsigned(rbits))
        shw = len(sh_bank[0])
        sh5, sh6, sh7 = (Signal(unsigned(shw), name=f"sh{i}") for i in (5, 6, 7))
        m.d.sync += [s3.eq(per_bank(s_bank, o[2])), r4.eq(per_bank(r_bank, o[3])),
                     sh5.eq(per_bank(sh_bank, o[4])), sh6.eq(sh5), sh7.eq(sh6)]
        f3 = max(norm + fg, fbeta, fl)
        res = Signal(self.o_stream.payload.shape())
        for j in range(vw):
            def sg(shape, name, **kw):
                return Signal(shape, name=f"{name}" if vw == 1 else f"{name}_{j}", **kw)
            # stage 2: buffer and table words registered
            x2o = sg(signed(f.residual.bits), "x2o", reset_less=True)
            g2 = sg(lnp_l, "g2", reset_less=True)
            m.d.sync += [x2o.eq(buf_r[j].data), g2.eq(ln_r[j].data)]
            # stage 3: H*s
            hx3 = sg(signed(f.residual.bits + hb + 1), "hx3")
            g3 = sg(lnp_l, "g3")
            m.d.sync += [hx3.eq(x2o * h), g3.eq(g2)]
            # stage 4: d = H*s - S
            d4 = sg(signed(self._s_width + 1), "d4")
            g4 = sg(lnp_l, "g4")
            m.d.sync += [d4.eq(hx3 - s3), g4.eq(g3)]
            # stage 5: d*R partial products; stage 6: their sum
            rhi, rlo = _split_product(m, d4, r4, "dr" if vw == 1 else f"dr{j}")
            g5, g6 = sg(lnp_l, "g5"), sg(lnp_l, "g6")
            p6 = sg(signed(len(d4) + rbits + 1), "p6")
            m.d.sync += [g5.eq(g4), p6.eq(_join(rhi, rlo)), g6.eq(g5)]
            # stages 7, 8: the floor shift by shift = rsqrt_frac + s/2 - norm_frac >= 0, in two steps
            t7 = sg(signed(len(d4) + rbits + 1), "t7")
            g7 = sg(lnp_l, "g7")
            m.d.sync += [t7.eq(p6 >> Cat(Const(0, 2), sh6[2:])), g7.eq(g6)]
            n8 = sg(signed(norm + bits_for(int(max_h ** 0.5) + 1) + 2), "n8")
            g8 = sg(lnp_l, "g8")
            m.d.sync += [n8.eq(t7 >> sh7[:2]), g8.eq(g7)]
            # stage 9: n*g partial products; stage 10: their sum; stage 11: + beta on the grid F3
            ghi, glo = _split_product(m, n8, g8.gamma, "ng" if vw == 1 else f"ng{j}")
            beta9, beta10 = sg(signed(f.ln_bias.bits), "beta9"), sg(signed(f.ln_bias.bits), "beta10")
            ng10 = sg(signed(len(n8) + f.ln_weight.bits + 1), "ng10")
            m.d.sync += [beta9.eq(g8.beta), ng10.eq(_join(ghi, glo)), beta10.eq(beta9)]
            z11 = sg(signed(max(len(ng10) + f3 - norm - fg, f.ln_bias.bits + f3 - fbeta) + 1), "z11")
            m.d.sync += z11.eq((ng10 << (f3 - norm - fg)) + (beta10 << (f3 - fbeta)))
            # stage 12: floor onto the layernorm grid, saturate; stage 13: the FIFO input register
            y12 = sg(signed(f.layernorm.bits), "y12")
            _sat(m, y12, z11 >> (f3 - fl), f.layernorm)
            m.d.sync += [res.y[j].eq(y12), res.bit[j].eq(y12 >= 0)]
        m.d.sync += res.last.eq(o[12].last)
        assert lat == 13
        m.d.comb += [
            out_fifo.w_en.eq(o[13].valid),
            out_fifo.w_data.eq(res),
            self.o_stream.payload.eq(out_fifo.r_data),
            self.o_stream.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o_stream.ready),
        ]
        gave = self.o_stream.valid & self.o_stream.ready
        with m.If(issue & ~gave):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~issue & gave):
            m.d.sync += outstanding.eq(outstanding - 1)
        m.d.comb += pipe_busy.eq(Cat(*(ci.valid for ci in c[1:]), *(oi.valid for oi in o[1:])).any())
        return m


def _tree_sum(values):
    """A balanced adder tree of Amaranth values."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i] for i in range(0, len(values), 2)]
    return values[0]
