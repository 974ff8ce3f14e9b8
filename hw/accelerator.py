"""The whole W1A1 inference: token ids in, member logits and combined logits out.

The contract is :class:`bebert.golden.infer.GoldenModel` (via :func:`bebert.golden.accelerator.expected_outputs`)
with the memory image :func:`bebert.golden.accelerator.model_image` and the cycle estimate
:func:`bebert.golden.accelerator.expected_cycles` (``docs/hw-engine.md``, "Accelerator").
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from ._params import pack_fields as _pack
from ..golden import accelerator as _golden
from ..golden.accelerator import AccelSpec
from .encoder import EncoderLayer, _Copy
from .vector import VectorUnit

__all__ = ["AccelInput", "AccelCommand", "AccelOutput", "AccelCounters", "Accelerator", "AccelCodec",
           "AccelInputError"]


class AccelInputError(ValueError):
    """Token ids, types or lengths the accelerator cannot take (the message says which and why)."""


class AccelInput(data.StructLayout):
    """An ``i_stream`` beat: token ``id``, its ``type``; ``last`` ends the sequence's load."""

    def __init__(self, spec: AccelSpec):
        super().__init__({"id": unsigned(bits_for(spec.vocab - 1)), "type": unsigned(bits_for(spec.types - 1)),
                          "last": unsigned(1)})


class AccelCommand(data.StructLayout):
    """A ``c_stream`` beat: ``tokens`` (n loaded tokens), ``length`` (tokens ``0 .. length-1`` are real)."""

    def __init__(self, max_tokens: int):
        super().__init__({"tokens": unsigned(bits_for(max_tokens)), "length": unsigned(bits_for(max_tokens))})


class AccelOutput(data.StructLayout):
    """An ``o_stream`` beat: ``logit`` (``logits`` code) of class ``label`` of member ``member`` (``member ==
    M``: the combined logits, with ``pred`` their argmax); ``last`` on the inference's final beat."""

    def __init__(self, spec: AccelSpec):
        super().__init__({"logit": signed(spec.fmt["logits"].bits), "member": unsigned(bits_for(spec.members)),
                          "label": unsigned(bits_for(spec.labels - 1)), "pred": unsigned(bits_for(spec.labels - 1)),
                          "last": unsigned(1)})


class AccelCounters(data.StructLayout):
    """Performance counters of the last command (see :class:`Accelerator`)."""

    def __init__(self, names, width: int):
        super().__init__({name: unsigned(width) for name in names})


def _fit(m, dst, value, fmt):
    """``dst = clamp(value)`` to ``fmt``'s range (saturation)."""
    with m.If(value > fmt.qmax):
        m.d.comb += dst.eq(fmt.qmax)
    with m.Elif(value < fmt.qmin):
        m.d.comb += dst.eq(fmt.qmin)
    with m.Else():
        m.d.comb += dst.eq(value)


def _align(terms, f_out):
    """``floor(sum_t q_t * 2**-f_t * 2**f_out)`` of Amaranth values (exact shifts, one floor)."""
    big = max([f_out] + [f for _, f in terms])
    z = None
    for q, f in terms:
        t = q << (big - f) if big > f else q
        z = t if z is None else z + t
    return z >> (big - f_out) if big > f_out else z


class Accelerator(wiring.Component):
    """One W1A1 BEBERT inference: embeddings, ``L`` encoder layers, pooler, classifier per member; combine.

    Members run in turn (one lane). Per member:

    - **embed**: the embedding LayerNorm table (``H`` records) into a :class:`~bebert.hw.vector.VectorUnit`,
      then per token its word record (sign bits and scale of row ``id``) and the ``H`` position/type code
      pairs; each channel's sum ``align_add([(+-a, f_scale), (P, f_emb), (T, f_emb)] -> residual)`` is the
      vector unit's residual input (its linear part zeroed: scale 0, bias 0), whose LayerNorm output goes
      into the activation buffer (``max_tokens * H`` codes).
    - **layer l** (one :class:`~bebert.hw.encoder.EncoderLayer` reused for every layer and member): the
      layer's threshold records into its ``t_stream`` and vector records into its ``p_stream``, the
      activation buffer replayed into its ``i_stream``, then its command (``keys = length``: the padding
      after the real tokens is masked) on the layer's weights; its output goes back into the activation
      buffer, token 0's sign bits into the pooler input register.
    - **head**: ``H`` pooler records (row bits, scale, bias): XNOR popcount with token 0's bits, scale and
      bias, the tanh index; ``H`` tanh look-ups; the classifier (``L*H`` codes, one MAC per cycle) and its
      biases; the member's ensemble weight, ``total += e_m * logit``; the member's ``L`` logits out.

    Then the combined logits ``align_add([(total, f_ens + f_logit)] -> logits)``, their argmax (ties to the
    lowest class) and ``L`` output beats. Every parameter comes from the one memory port: the parameter
    reader (addresses from :func:`bebert.golden.accelerator.model_layout`, at most ``reader_depth`` words in
    flight, responses through a FIFO) outside the layer commands, the layer's own port during them.

    Ports
    -----
    i_stream : In(:class:`AccelInput`)
        The sequence before the command: ``n`` beats (``id``, ``type``), ``last`` on the final one.
    c_stream : In(:class:`AccelCommand`)
        ``tokens`` (= the loaded ``n``), ``length`` (real tokens, ``1..n``).
    req_stream, rsp_stream : the memory port (word addresses out, words back in request order).
    o_stream : Out(:class:`AccelOutput`)
        ``M*L`` member logits (member major), then ``L`` combined logits; ``last`` on the final beat.
    counters : Out(:class:`AccelCounters`)
        Cleared by a command, final when ``running`` falls: ``cycles`` (acceptance to the final output
        transfer), per phase ``embed``, ``layer0`` .. (each including its parameter load), ``head`` (pooler,
        classifier, combine, output; the phases sum to ``cycles``), ``load`` (the layers' parameter loads and
        input replays, part of the layer counters), summed over layers and members the
        engines' ``busy``, ``stall_weights``, ``stall_output`` and the vector ops' ``vector_beats``, and
        ``out_wait`` (cycles with an output beat offered and not taken), ``param_words`` (words read by the
        parameter reader).
    running : Out(1)

    Parameters
    ----------
    spec : :class:`bebert.golden.accelerator.AccelSpec` (dimensions, formats, ``P``, ``S``, word width).
    max_tokens : longest sequence (default ``spec.max_len``).
    kb, addr_width, fetch_depth, counter_bits, impl : as :class:`~bebert.hw.encoder.EncoderLayer`.
    reader_depth : words the parameter reader keeps in flight.
    """

    def __init__(self, spec: AccelSpec, *, max_tokens: int | None = None, kb: int = 4, addr_width: int = 24,
                 fetch_depth: int = 2, counter_bits: int = 32, reader_depth: int = 16, impl: str = "behavioral"):
        if not isinstance(spec, AccelSpec):
            self._MustUse__used = True
            raise TypeError(f"spec must be an AccelSpec, not {type(spec).__name__}")
        try:
            spec.check()
            mt = spec.max_len if max_tokens is None else max_tokens
            if not isinstance(mt, int) or not 1 <= mt <= spec.max_len:
                raise ValueError(f"max_tokens must be 1..{spec.max_len} (the model's max_len), not {mt!r}")
            self.layout = _golden.model_layout(spec)
            if self.layout["words"] > (1 << addr_width):
                raise ValueError(f"the model image of {self.layout['words']} words does not fit {addr_width} "
                                 "address bits")
            self.enc = EncoderLayer(hidden=spec.hidden, heads=spec.heads, ffn=spec.ffn, max_tokens=mt, p=spec.p,
                                    s=spec.s, word_bits=spec.word_bits, kb=kb, fmts=spec.vfmts, addr_width=addr_width,
                                    fetch_depth=fetch_depth, counter_bits=counter_bits, impl=impl)
            self.vu = VectorUnit(max_h=spec.hidden, max_k=1, fmts=spec.vfmts)
        except (TypeError, ValueError):
            self._MustUse__used = True
            raise
        self.spec, self._mt, self._kb, self._fetch_depth = spec, mt, kb, fetch_depth
        self._reader_depth, self._counter_bits, self._addr_width = reader_depth, counter_bits, addr_width
        self.COUNTERS = (("cycles", "embed") + tuple(f"layer{i}" for i in range(spec.layers)) +
                         ("head", "load", "busy", "stall_weights", "stall_output", "vector_beats", "out_wait", "param_words"))
        super().__init__({
            "i_stream": In(stream.Signature(AccelInput(spec))),
            "c_stream": In(stream.Signature(AccelCommand(mt))),
            "req_stream": Out(stream.Signature(unsigned(addr_width))),
            "rsp_stream": In(stream.Signature(unsigned(spec.word_bits))),
            "o_stream": Out(stream.Signature(AccelOutput(spec))),
            "counters": Out(AccelCounters(self.COUNTERS, counter_bits)),
            "running": Out(1),
        })

    max_tokens = property(lambda self: self._mt)

    @property
    def codec(self) -> "AccelCodec":
        return AccelCodec(self.spec, self._mt, self.COUNTERS, self._counter_bits)

    def expected_cycles(self, n: int, bits_per_cycle: float, latency: int, **kw):
        """:func:`bebert.golden.accelerator.expected_cycles` with this accelerator's parameters."""
        enc = self.enc
        return _golden.expected_cycles(self.spec, n, bits_per_cycle, latency, kb=self._kb,
                                       pe_latency=enc.eng.pe.latency, fetch_depth=self._fetch_depth,
                                       stats_cycles=enc.lv.vu.stats_cycles, vector_latency=enc.lv.vu.latency,
                                       attn_latency=enc.att.latency, reader_depth=self._reader_depth, **kw)

    def elaborate(self, platform):
        m = Module()
        sp, lay = self.spec, self.layout
        h, mt, wb, L, M = sp.hidden, self._mt, sp.word_bits, sp.labels, sp.members
        f = sp.fmt
        rb = _golden.record_bits(sp)
        m.submodules.enc = enc = self.enc
        m.submodules.vu = vu = self.vu
        ctr = self.counters

        # ------------------------------------------------------------------ state
        IDLE, EMBED, LOAD, RUN, HEAD, OUT, COMB, DONE = range(8)
        phase = Signal(range(8))
        mi = Signal(range(max(M, 2)))
        li = Signal(range(max(sp.layers, 2)))
        cmd = Signal(AccelCommand(mt))
        accept = self.c_stream.valid & self.c_stream.ready
        m.d.comb += [self.c_stream.ready.eq(phase == IDLE), self.running.eq(phase != IDLE)]
        n = cmd.tokens

        # token ids and types
        ids = Array(Signal(bits_for(sp.vocab - 1), name=f"id{i}") for i in range(mt))
        tys = Array(Signal(bits_for(sp.types - 1), name=f"ty{i}") for i in range(mt))
        wptr = Signal(range(mt))
        m.d.comb += self.i_stream.ready.eq(phase == IDLE)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [ids[wptr].eq(self.i_stream.payload.id), tys[wptr].eq(self.i_stream.payload.type)]
            m.d.sync += wptr.eq(Mux(self.i_stream.payload.last | (wptr == mt - 1), 0, wptr + 1))

        # ------------------------------------------------------------------ parameter reader
        depth = self._reader_depth
        aw = self._addr_width
        rd_go = Signal()
        rd_base0, rd_base1 = Signal(aw), Signal(aw)
        rd_count = Signal(range(max(lay["words"], 2) + 1))
        rd_wpr = Signal(range(max(lay[k] for k in lay if k.startswith("wpr_")) + 2))
        rd_inter = Signal()
        r_b0, r_b1, r_cnt, r_wpr, r_inter = Signal(aw), Signal(aw), Signal.like(rd_count), Signal.like(rd_wpr), Signal()
        r_j = Signal.like(rd_count)
        r_half = Signal()
        r_k = Signal.like(rd_wpr)
        r_active = Signal()
        outstanding = Signal(range(depth + 1))
        sel_enc = Signal()
        m.d.comb += sel_enc.eq(phase == RUN)
        rd_idle = ~r_active
        m.submodules.wq = wq = fifo.SyncFIFOBuffered(width=wb, depth=depth)
        m.submodules.tq = tq = fifo.SyncFIFOBuffered(width=1, depth=depth)
        req_valid = Signal()
        req_addr = Signal(aw)
        tag = Signal()
        m.d.comb += [
            req_valid.eq(r_active & (outstanding < depth) & tq.w_rdy),
            req_addr.eq(Mux(r_inter & r_half, r_b1, r_b0) + r_j),
            tag.eq(Mux(r_inter, r_half, r_k == r_wpr - 1)),
        ]
        issue = req_valid & self.req_stream.ready & ~sel_enc
        m.d.comb += [tq.w_data.eq(tag), tq.w_en.eq(issue)]
        with m.If(rd_go & rd_idle):
            m.d.sync += [r_active.eq(1), r_b0.eq(rd_base0), r_b1.eq(rd_base1), r_cnt.eq(rd_count),
                         r_wpr.eq(rd_wpr), r_inter.eq(rd_inter), r_j.eq(0), r_half.eq(0), r_k.eq(0)]
        with m.Elif(issue):
            with m.If(r_inter):
                m.d.sync += r_half.eq(~r_half)
                with m.If(r_half):
                    m.d.sync += r_j.eq(r_j + 1)
                    with m.If(r_j == r_cnt - 1):
                        m.d.sync += r_active.eq(0)
            with m.Else():
                m.d.sync += [r_j.eq(r_j + 1), r_k.eq(Mux(r_k == r_wpr - 1, 0, r_k + 1))]
                with m.If(r_j == r_cnt - 1):
                    m.d.sync += r_active.eq(0)
        # responses into the word FIFO (always room: at most `depth` outstanding)
        m.d.comb += [wq.w_data.eq(self.rsp_stream.payload), wq.w_en.eq(self.rsp_stream.valid & ~sel_enc)]
        # record assembler
        n_chunks = max(lay[k] for k in lay if k.startswith("wpr_"))
        n_chunks = max(n_chunks, 2)
        chunks = [Signal(wb, name=f"chunk{i}") for i in range(n_chunks)]
        a_k = Signal(range(n_chunks))
        rec_valid = Signal()
        rec_take = Signal()
        rec = Signal(n_chunks * wb)
        m.d.comb += rec.eq(Cat(*chunks))
        pop = wq.r_rdy & tq.r_rdy & (~rec_valid | rec_take)
        m.d.comb += [wq.r_en.eq(pop), tq.r_en.eq(pop)]
        with m.If(pop):
            for i, c in enumerate(chunks):
                with m.If(a_k == i):
                    m.d.sync += c.eq(wq.r_data)
            m.d.sync += a_k.eq(Mux(tq.r_data, 0, a_k + 1))
        with m.If(pop):
            m.d.sync += rec_valid.eq(tq.r_data)
        with m.Elif(rec_take):
            m.d.sync += rec_valid.eq(0)
        with m.If(issue & ~pop):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(pop & ~issue):
            m.d.sync += outstanding.eq(outstanding - 1)
        m.d.comb += [self.req_stream.valid.eq(Mux(sel_enc, enc.req_stream.valid, req_valid)),
                     self.req_stream.payload.eq(Mux(sel_enc, enc.req_stream.payload, req_addr)),
                     enc.req_stream.ready.eq(self.req_stream.ready & sel_enc),
                     enc.rsp_stream.valid.eq(self.rsp_stream.valid & sel_enc),
                     enc.rsp_stream.payload.eq(self.rsp_stream.payload),
                     self.rsp_stream.ready.eq(Mux(sel_enc, enc.rsp_stream.ready, 1))]

        def field(kind, i):
            off = sum(rb[kind][:i])
            return rec[off: off + rb[kind][i]]

        def code(width):
            return rec[:width].as_signed()

        # region addresses (member m, layer l)
        mbase = Signal(aw)
        lbase = Signal(aw)
        m.d.comb += [mbase.eq(lay["members"] + mi * lay["member_words"]),
                     lbase.eq(mbase + lay["layers"] + li * lay["layer_words"])]

        # sequencer-side reader commands
        rq = Signal(range(8))       # command step within a phase
        tq_i = Signal(range(max(mt, h) + 1))  # token / channel of the command step

        def go(base0, count, wpr, inter=0, base1=0):
            m.d.comb += [rd_go.eq(1), rd_base0.eq(base0), rd_base1.eq(base1), rd_count.eq(count), rd_wpr.eq(wpr),
                         rd_inter.eq(inter)]

        started = rd_go & rd_idle

        # ------------------------------------------------------------------ activation buffer
        m.submodules.abuf = abuf = Memory(shape=signed(f["layernorm"].bits), depth=mt * h, init=[])
        a_wr, a_rd = abuf.write_port(), abuf.read_port()
        a_ptr = Signal(range(mt * h + 1))

        # ------------------------------------------------------------------ consumer state
        cc = Signal(range(max(2 * h + sp.groups, L * h, h * mt) + 2))   # records consumed in the phase
        ct = Signal(range(mt + 1))       # token (embed)
        cch = Signal(range(h + 1))       # channel (embed)
        wrow = Signal(h)
        wscale = Signal(signed(f["weight_scale"].bits))
        cstate = Signal(2)               # embed: 0 table, 1 word record, 2 pairs

        # ------------------------------------------------------------------ EMBED
        m.d.comb += [vu.p_stream.payload.addr.eq(cc), vu.p_stream.payload.scale.eq(0), vu.p_stream.payload.bias.eq(0),
                     vu.p_stream.payload.gamma.eq(field("emb_ln", 0).as_signed()),
                     vu.p_stream.payload.beta.eq(field("emb_ln", 1).as_signed()),
                     vu.p_stream.payload.k.eq(1), vu.p_stream.payload.last.eq(cc == h - 1)]
        fe, fs, fr = f["embedding"].frac, f["weight_scale"].frac, f["residual"].frac
        eb = f["embedding"].bits
        pos_c = rec[:eb].as_signed()
        typ_c = rec[wb: wb + eb].as_signed()
        sgn = wrow.bit_select(cch, 1)
        term = Mux(sgn, wscale, -wscale)
        esum = Signal(signed(f["residual"].bits))
        _fit(m, esum, _align([(term, fs), (pos_c, fe), (typ_c, fe)], fr), f["residual"])
        m.d.comb += [vu.i_stream.payload.acc.eq(0), vu.i_stream.payload.x.eq(esum)]
        in_embed = phase == EMBED
        with m.If(in_embed):
            with m.Switch(cstate):
                with m.Case(0):
                    m.d.comb += [vu.p_stream.valid.eq(rec_valid), rec_take.eq(vu.p_stream.ready)]
                    with m.If(rec_valid & vu.p_stream.ready):
                        m.d.sync += cc.eq(cc + 1)
                        with m.If(cc == h - 1):
                            m.d.sync += [cstate.eq(1), ct.eq(0)]
                with m.Case(1):
                    m.d.comb += rec_take.eq(1)
                    with m.If(rec_valid):
                        m.d.sync += [wrow.eq(field("word", 0)), wscale.eq(field("word", 1).as_signed()),
                                     cstate.eq(2), cch.eq(0)]
                with m.Case(2):
                    m.d.comb += [vu.i_stream.valid.eq(rec_valid), rec_take.eq(vu.i_stream.ready)]
                    with m.If(rec_valid & vu.i_stream.ready):
                        m.d.sync += cch.eq(cch + 1)
                        with m.If(cch == h - 1):
                            m.d.sync += [cstate.eq(1), ct.eq(ct + 1)]
            # reader commands: the table, then per token its word record and pairs
            with m.Switch(rq):
                with m.Case(0):
                    go(mbase + lay["emb_ln"], h * lay["wpr_emb_ln"], lay["wpr_emb_ln"])
                    with m.If(started):
                        m.d.sync += [rq.eq(1), tq_i.eq(0)]
                with m.Case(1):
                    go(mbase + lay["word"] + ids[tq_i] * lay["wpr_word"], lay["wpr_word"], lay["wpr_word"])
                    with m.If(started):
                        m.d.sync += rq.eq(2)
                with m.Case(2):
                    go(mbase + lay["position"] + tq_i * h, h, 2, 1, mbase + lay["type"] + tys[tq_i] * h)
                    with m.If(started):
                        m.d.sync += [rq.eq(Mux(tq_i == n - 1, 3, 1)), tq_i.eq(tq_i + 1)]
        # vector unit output into the activation buffer
        m.d.comb += [vu.o_stream.ready.eq(1)]
        emb_take = vu.o_stream.valid
        # ------------------------------------------------------------------ LOAD / RUN
        in_load, in_run = phase == LOAD, phase == RUN
        gq = sp.groups
        tw = sp.acc_width * sp.p
        m.d.comb += [enc.t_stream.payload.addr.eq(cc), enc.t_stream.payload.t.eq(rec[:tw]),
                     enc.t_stream.payload.pol.eq(rec[tw: tw + sp.p]), enc.t_stream.payload.last.eq(cc == gq - 1)]
        vcc = Signal(range(2 * h + 1))
        m.d.comb += vcc.eq(cc - gq)
        m.d.comb += [enc.p_stream.payload.table.eq(vcc >= h), enc.p_stream.payload.addr.eq(Mux(vcc >= h, vcc - h, vcc)),
                     enc.p_stream.payload.scale.eq(field("vec", 0).as_signed()),
                     enc.p_stream.payload.bias.eq(field("vec", 1).as_signed()),
                     enc.p_stream.payload.gamma.eq(field("vec", 2).as_signed()),
                     enc.p_stream.payload.beta.eq(field("vec", 3).as_signed())]
        replay = _Copy(m, "replay", n, mt, h, h, enc.i_stream.ready)
        m.d.comb += [a_rd.addr.eq(replay.lin), a_rd.en.eq(replay.advance),
                     enc.i_stream.valid.eq(replay.b_valid), enc.i_stream.payload.x.eq(a_rd.data),
                     enc.i_stream.payload.last.eq(replay.b_last)]
        loads_done = cc == gq + 2 * h
        with m.If(in_load):
            with m.If(cc < gq):
                m.d.comb += [enc.t_stream.valid.eq(rec_valid), rec_take.eq(enc.t_stream.ready)]
                with m.If(rec_valid & enc.t_stream.ready):
                    m.d.sync += cc.eq(cc + 1)
            with m.Elif(~loads_done):
                m.d.comb += [enc.p_stream.valid.eq(rec_valid), rec_take.eq(enc.p_stream.ready)]
                with m.If(rec_valid & enc.p_stream.ready):
                    m.d.sync += cc.eq(cc + 1)
            with m.Switch(rq):
                with m.Case(0):
                    go(lbase + lay["thr"], gq * lay["wpr_thr"], lay["wpr_thr"])
                    with m.If(started):
                        m.d.sync += rq.eq(1)
                with m.Case(1):
                    go(lbase + lay["vec"], 2 * h * lay["wpr_vec"], lay["wpr_vec"])
                    with m.If(started):
                        m.d.sync += rq.eq(2)
        m.d.comb += [enc.c_stream.valid.eq(in_load & loads_done & ~replay.busy & (rq == 2)),
                     enc.c_stream.payload.tokens.eq(n), enc.c_stream.payload.keys.eq(cmd.length),
                     enc.c_stream.payload.base.eq(lbase + lay["image"])]
        eo = enc.o_stream
        x0 = Signal(h)
        m.d.comb += eo.ready.eq(1)
        run_take = eo.valid & in_run
        with m.If(run_take):
            with m.If(a_ptr < h):
                m.d.sync += x0.bit_select(a_ptr[:bits_for(h - 1)], 1).eq(eo.payload.bit)
        m.d.comb += [a_wr.addr.eq(a_ptr), a_wr.en.eq(Mux(in_run, run_take, emb_take & in_embed)),
                     a_wr.data.eq(Mux(in_run, eo.payload.y, vu.o_stream.payload.y))]
        with m.If(a_wr.en):
            m.d.sync += a_ptr.eq(a_ptr + 1)

        # ------------------------------------------------------------------ HEAD
        in_head = phase == HEAD
        nt = sp.tanh_len
        ib = bits_for(nt - 1)
        idx = Array(Signal(ib, name=f"idx{i}") for i in range(h))
        pv = Array(Signal(signed(f["pooler"].bits), name=f"p{i}") for i in range(h))
        acc_w = f["pooler"].bits + f["classifier_weight"].bits + bits_for(h) + 1
        cacc = Array(Signal(signed(acc_w), name=f"cacc{i}") for i in range(L))
        logit = Array(Signal(signed(f["logits"].bits), name=f"logit{i}") for i in range(L))
        tot_w = f["ensemble_weight"].bits + f["logits"].bits + bits_for(M) + 1
        tot = Array(Signal(signed(tot_w), name=f"tot{i}") for i in range(L))
        hstate = Signal(range(6))    # 0 pooler, 1 tanh, 2 classifier, 3 bias, 4 ensemble weight
        hl = Signal(range(L + 1))
        hk = Signal(range(h + 1))
        # pooler: popcount of the XNOR of token 0's bits with row c
        wbits = field("pooler", 0)
        agree = Signal(h)
        m.d.comb += agree.eq(~(wbits ^ x0))
        pc = Signal(range(h + 1))
        m.d.comb += pc.eq(sum(agree[i] for i in range(h)))
        pscale = field("pooler", 1).as_signed()
        pbias = field("pooler", 2).as_signed()
        py = Signal(signed(f["residual"].bits))
        dot = Signal(signed(bits_for(h) + 2))
        m.d.comb += dot.eq(2 * pc - h)
        _fit(m, py, _align([(pscale * dot, fs), (pbias, f["bias"].frac)], fr), f["residual"])
        pidx = Signal(ib)
        rel = Signal(signed(f["residual"].bits + 2))
        m.d.comb += rel.eq(py - sp.tanh_c0)
        with m.If(rel < 0):
            m.d.comb += pidx.eq(0)
        with m.Elif(rel > nt - 1):
            m.d.comb += pidx.eq(nt - 1)
        with m.Else():
            m.d.comb += pidx.eq(rel)
        fl, fp, fcw, fens = f["logits"].frac, f["pooler"].frac, f["classifier_weight"].frac, f["ensemble_weight"].frac
        bsum = Signal(signed(f["logits"].bits))
        _fit(m, bsum, _align([(cacc[hl], fp + fcw), (code(f["logits"].bits), fl)], fl), f["logits"])
        ew = code(f["ensemble_weight"].bits)
        with m.If(in_head):
            m.d.comb += rec_take.eq(1)
            with m.If(rec_valid):
                with m.Switch(hstate):
                    with m.Case(0):
                        m.d.sync += [idx[cc].eq(pidx), cc.eq(cc + 1)]
                        with m.If(cc == h - 1):
                            m.d.sync += [hstate.eq(1), cc.eq(0)]
                    with m.Case(1):
                        m.d.sync += [pv[cc].eq(code(f["pooler"].bits)), cc.eq(cc + 1)]
                        with m.If(cc == h - 1):
                            m.d.sync += [hstate.eq(2), hl.eq(0), hk.eq(0)]
                            m.d.sync += [cacc[i].eq(0) for i in range(L)]
                    with m.Case(2):
                        m.d.sync += cacc[hl].eq(cacc[hl] + pv[hk] * code(f["classifier_weight"].bits))
                        with m.If(hk == h - 1):
                            m.d.sync += [hk.eq(0), hl.eq(hl + 1)]
                            with m.If(hl == L - 1):
                                m.d.sync += [hstate.eq(3), hl.eq(0)]
                        with m.Else():
                            m.d.sync += hk.eq(hk + 1)
                    with m.Case(3):
                        m.d.sync += [logit[hl].eq(bsum), hl.eq(hl + 1)]
                        with m.If(hl == L - 1):
                            m.d.sync += [hstate.eq(4), hl.eq(0)]
                    with m.Case(4):
                        m.d.sync += [tot[i].eq(tot[i] + ew * logit[i]) for i in range(L)]
                        m.d.sync += hstate.eq(5)
            with m.Switch(rq):
                with m.Case(0):
                    go(mbase + lay["pooler"], h * lay["wpr_pooler"], lay["wpr_pooler"])
                    with m.If(started):
                        m.d.sync += [rq.eq(1), tq_i.eq(0)]
                with m.Case(1):
                    with m.If(hstate != 0):
                        go(lay["tanh"] + idx[tq_i], 1, 1)
                        with m.If(started):
                            m.d.sync += tq_i.eq(tq_i + 1)
                            with m.If(tq_i == h - 1):
                                m.d.sync += rq.eq(2)
                with m.Case(2):
                    go(mbase + lay["classifier"], L * h, 1)
                    with m.If(started):
                        m.d.sync += rq.eq(3)
                with m.Case(3):
                    go(mbase + lay["cls_bias"], L, 1)
                    with m.If(started):
                        m.d.sync += rq.eq(4)
                with m.Case(4):
                    go(lay["ensemble"] + mi, 1, 1)
                    with m.If(started):
                        m.d.sync += rq.eq(5)

        # ------------------------------------------------------------------ outputs
        ol = Signal(range(L + 1))
        comb = Array(Signal(signed(f["logits"].bits), name=f"comb{i}") for i in range(L))
        pred = Signal(range(max(L, 2)))
        o = self.o_stream
        m.d.comb += [o.payload.label.eq(ol), o.payload.member.eq(Mux(phase == COMB, M, mi)), o.payload.pred.eq(pred),
                     o.payload.logit.eq(Mux(phase == COMB, comb[ol], logit[ol])),
                     o.payload.last.eq((phase == COMB) & (ol == L - 1)),
                     o.valid.eq((phase == OUT) | (phase == COMB))]
        # combined logits and argmax (from the totals, combinational)
        comb_vals = []
        for i in range(L):
            cv = Signal(signed(f["logits"].bits), name=f"combv{i}")
            _fit(m, cv, _align([(tot[i], fens + fl)], fl), f["logits"])
            comb_vals.append(cv)
        best, besti = comb_vals[0], Const(0, range(max(L, 2)))
        for i in range(1, L):
            better = comb_vals[i] > best
            best = Mux(better, comb_vals[i], best)
            besti = Mux(better, i, besti)

        # ------------------------------------------------------------------ the sequence
        def enter(ph):
            m.d.sync += [phase.eq(ph), rq.eq(0), cc.eq(0), tq_i.eq(0), cstate.eq(0), hstate.eq(0)]

        with m.If(accept):
            m.d.sync += [cmd.eq(self.c_stream.payload), mi.eq(0), a_ptr.eq(0)]
            m.d.sync += [tot[i].eq(0) for i in range(L)]
            enter(EMBED)
        with m.If(in_embed & (a_ptr == n * h - 1) & emb_take):
            enter(LOAD)
            m.d.sync += li.eq(0)
        with m.If(in_load):
            with m.If(rq == 0):
                m.d.comb += replay.start.eq(started)
            with m.If(enc.c_stream.valid & enc.c_stream.ready):
                m.d.sync += [phase.eq(RUN), a_ptr.eq(0)]
        with m.If(run_take & eo.payload.final):
            with m.If(li == sp.layers - 1):
                enter(HEAD)
            with m.Else():
                enter(LOAD)
                m.d.sync += li.eq(li + 1)
        with m.If(in_head & (hstate == 5)):
            m.d.sync += [phase.eq(OUT), ol.eq(0)]
        with m.If((phase == OUT) & o.ready):
            m.d.sync += ol.eq(ol + 1)
            with m.If(ol == L - 1):
                m.d.sync += ol.eq(0)
                with m.If(mi == M - 1):
                    m.d.sync += [phase.eq(COMB), pred.eq(besti)]
                    m.d.sync += [comb[i].eq(comb_vals[i]) for i in range(L)]
                with m.Else():
                    m.d.sync += [mi.eq(mi + 1), a_ptr.eq(0)]
                    enter(EMBED)
        with m.If((phase == COMB) & o.ready):
            m.d.sync += ol.eq(ol + 1)
            with m.If(ol == L - 1):
                m.d.sync += phase.eq(DONE)
        with m.If(phase == DONE):
            m.d.sync += phase.eq(IDLE)

        # ------------------------------------------------------------------ counters
        enc_run_d = Signal()
        m.d.sync += enc_run_d.eq(enc.running)
        enc_fin = enc_run_d & ~enc.running
        with m.If(accept):
            m.d.sync += [getattr(ctr, k).eq(0) for k in self.COUNTERS]
        with m.Else():
            with m.If((phase != IDLE) & (phase != DONE)):
                m.d.sync += ctr.cycles.eq(ctr.cycles + 1)
                with m.If(in_embed):
                    m.d.sync += ctr.embed.eq(ctr.embed + 1)
                with m.If(in_load):
                    m.d.sync += ctr.load.eq(ctr.load + 1)
                with m.If(in_load | in_run):
                    for i in range(sp.layers):
                        with m.If(li == i):
                            m.d.sync += getattr(ctr, f"layer{i}").eq(getattr(ctr, f"layer{i}") + 1)
                with m.If(in_head | (phase == OUT) | (phase == COMB)):
                    m.d.sync += ctr.head.eq(ctr.head + 1)
            with m.If(enc_fin):
                m.d.sync += [getattr(ctr, k).eq(getattr(ctr, k) + getattr(enc.counters, k))
                             for k in ("busy", "stall_weights", "stall_output", "vector_beats")]
            with m.If(o.valid & ~o.ready):
                m.d.sync += ctr.out_wait.eq(ctr.out_wait + 1)
            with m.If(pop):
                m.d.sync += ctr.param_words.eq(ctr.param_words + 1)
        return m


# ---- plain-integer encoders for testbenches and hosts



class AccelCodec:
    """Payload encoders/decoders of an :class:`Accelerator`'s streams, with the input checks of the golden model."""

    def __init__(self, spec: AccelSpec, max_tokens: int, counter_names, counter_bits: int = 32):
        self.spec, self.max_tokens = spec, max_tokens
        self.i_layout, self.c_layout, self.o_layout = AccelInput(spec), AccelCommand(max_tokens), AccelOutput(spec)
        self.counter_names, self.counter_bits = tuple(counter_names), counter_bits

    def sequence(self, ids, types=None, length: int | None = None) -> tuple[list[int], int]:
        """``(i_stream payloads, c_stream payload)`` of one sequence of ``n`` tokens, ``length`` real ones
        (default ``n``).

        Raises
        ------
        AccelInputError
            On an empty sequence, ``n`` over ``max_tokens``, ``length`` outside ``1..n``, a token id outside
            ``0..vocab-1`` or a type outside ``0..types-1`` (padding tokens included: they are looked up too).
        """
        sp = self.spec
        ids = [int(i) for i in ids]
        n = len(ids)
        types = [0] * n if types is None else [int(t) for t in types]
        length = n if length is None else int(length)
        if n == 0:
            raise AccelInputError("empty input: the sequence has no tokens")
        if n > self.max_tokens:
            raise AccelInputError(f"sequence of {n} tokens exceeds the accelerator's maximum {self.max_tokens}")
        if len(types) != n:
            raise AccelInputError(f"{len(types)} token types for {n} token ids")
        if not 1 <= length <= n:
            raise AccelInputError(f"length {length} is outside 1..{n} (the pooler reads token 0, which must be real)")
        for j, (i, t) in enumerate(zip(ids, types)):
            if not 0 <= i < sp.vocab:
                raise AccelInputError(f"token id {i} at position {j} is outside 0..{sp.vocab - 1}")
            if not 0 <= t < sp.types:
                raise AccelInputError(f"token type {t} at position {j} is outside 0..{sp.types - 1}")
        beats = [_pack(self.i_layout, id=i, type=t, last=int(j == n - 1)) for j, (i, t) in enumerate(zip(ids, types))]
        return beats, _pack(self.c_layout, tokens=n, length=length)

    def output(self, payload: int) -> dict:
        """``o_stream`` payload -> ``{logit, member, label, pred, last}``."""
        lay = self.o_layout
        out = {}
        for name in ("logit", "member", "label", "pred", "last"):
            shape = Shape.cast(lay[name].shape)
            v = (payload >> lay[name].offset) & ((1 << shape.width) - 1)
            if shape.signed and v >> (shape.width - 1):
                v -= 1 << shape.width
            out[name] = v
        return out

    def counters(self, value: int) -> dict[str, int]:
        lay = AccelCounters(self.counter_names, self.counter_bits)
        return {k: (value >> lay[k].offset) & ((1 << self.counter_bits) - 1) for k in self.counter_names}
