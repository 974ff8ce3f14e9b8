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
from ..golden.encoder import layer_offsets
from .encoder import EncoderLayer, _Copy
from .prefetch import WordPrefetch

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

    ``lanes`` (``E``) lanes run ``E`` members at a time (member ``r*E + e`` on lane ``e`` in round ``r``; rounds
    until all ``M`` have run, a lane without a member in the last round idles), each with its own encoder
    layer, vector unit, parameter reader, activation buffer and head, under one sequencer: every phase below
    ends when all busy lanes have finished it (a barrier), and the lanes share the one memory port through
    a round-robin arbiter (the lane of each request in flight in a ``tag_depth``-entry FIFO, which also
    bounds the requests in flight; ``E = 1`` connects the lane directly). Per member:

    - **embed**: the embedding LayerNorm table (``H`` records) into a :class:`~bebert.hw.vector.VectorUnit`,
      then per token its word record (sign bits and scale of row ``id``) and the ``H`` position/type code
      pairs; each channel's sum ``align_add([(+-a, f_scale), (P, f_emb), (T, f_emb)] -> residual)`` is the
      vector unit's residual input (its linear part zeroed: scale 0, bias 0), whose LayerNorm output goes
      into the activation buffer (``max_tokens * H`` codes).
    - **layer l** (the lane's :class:`~bebert.hw.encoder.EncoderLayer`, reused for every layer and member): the
      layer's threshold records into its ``t_stream`` and vector records into its ``p_stream``, the
      activation buffer replayed into its ``i_stream`` (the first layer only: a later layer runs on the
      previous one's output where the encoder layer left it), then its command (``keys = length``: the padding
      after the real tokens is masked) on the layer's weights; token 0's sign bits of its output go into the
      pooler input register (the output itself stays in the encoder layer for the next layer, and out on the
      taps).
    - **head**: ``H`` pooler records (row bits, scale, bias): XNOR popcount with token 0's bits, scale and
      bias, the tanh index; ``H`` tanh look-ups; the classifier (``L*H`` codes, one MAC per cycle) and its
      biases; the member's ensemble weight; the member's ``L`` logits out (lane by lane, in member order), and
      with each member's last beat the combine unit adds ``total += e_m * logit``.

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
        input replays, part of the layer counters; lane 0's), summed over layers, members and lanes the
        engines' ``busy``, ``stall_weights``, ``stall_output`` and the vector ops' ``vector_beats``, and
        ``out_wait`` (cycles with an output beat offered and not taken), ``param_words`` (words read by the
        parameter reader).
    running : Out(1)
    error : Out(1)
        A lane's weight prefetch saw a request out of sequence (sticky until reset; a design error, never
        expected).
    tap_valid, tap_y : Out(E * vw), Out(E * vw * layernorm bits)
        Observation only (for testbenches; unused in a design they cost nothing): lane ``e``'s LayerNorm
        outputs, ``tap_valid[e*vw + j]`` with the code in ``tap_y[(e*vw + j)*b:(e*vw + j + 1)*b]`` (slots ``j``
        in channel order): the embedding LayerNorm outputs (one a cycle, slot 0), then each layer's outputs
        (``n*H`` codes each, token major, ``vw`` a beat), member after member.

    Parameters
    ----------
    spec : :class:`bebert.golden.accelerator.AccelSpec` (dimensions, formats, ``P``, ``S``, word width).
    max_tokens : longest sequence (default ``spec.max_len``).
    kb, addr_width, fetch_depth, counter_bits, impl, vw : as :class:`~bebert.hw.encoder.EncoderLayer` (``vw``:
        channels a beat through the layers' vector unit and out of them).
    lanes : ensemble-parallel lanes ``E`` (``1..M``).
    reader_depth : words each lane's parameter reader keeps in flight.
    tag_depth : requests in flight on the shared memory port (``E > 1``).
    prefetch : words of each lane's run-ahead weight FIFO (:class:`~bebert.hw.prefetch.WordPrefetch`), 0 for
        none. A layer command's weight image is read in address order, so with a prefetch the lane reads it
        from the command on as fast as the memory (and its share of the port) allows, during the attention
        op, the LayerNorm passes and the hand-overs between ops too, up to this many words ahead.
    prefetch_inflight : reads the prefetch keeps in flight at most.
    """

    def __init__(self, spec: AccelSpec, *, lanes: int = 1, max_tokens: int | None = None, kb: int = 4,
                 addr_width: int = 24, fetch_depth: int = 2, counter_bits: int = 32, reader_depth: int = 16,
                 tag_depth: int = 32, prefetch: int = 0, prefetch_inflight: int = 32, impl: str = "behavioral",
                 vw: int = 1):
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
            if not isinstance(lanes, int) or not 1 <= lanes <= spec.members:
                raise ValueError(f"lanes must be 1..{spec.members} (the ensemble's members), not {lanes!r}")
            if not isinstance(tag_depth, int) or tag_depth < 2:
                raise ValueError(f"tag_depth must be an integer >= 2, not {tag_depth!r}")
            if not isinstance(prefetch, int) or prefetch < 0 or prefetch == 1:
                raise ValueError(f"prefetch must be 0 (off) or at least 2 words, not {prefetch!r}")
            self.encs = [EncoderLayer(hidden=spec.hidden, heads=spec.heads, ffn=spec.ffn, max_tokens=mt, p=spec.p,
                                      s=spec.s, word_bits=spec.word_bits, kb=kb, fmts=spec.vfmts,
                                      addr_width=addr_width, fetch_depth=fetch_depth, counter_bits=counter_bits,
                                      impl=impl, vw=vw) for _ in range(lanes)]
            self.enc = self.encs[0]
        except (TypeError, ValueError):
            self._MustUse__used = True
            raise
        self.spec, self._mt, self._kb, self._fetch_depth = spec, mt, kb, fetch_depth
        self.vw = vw
        self.lanes, self._tag_depth, self.prefetch = lanes, tag_depth, prefetch
        self.prefetch_inflight = prefetch_inflight if prefetch else 0
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
            "error": Out(1),
            "tap_valid": Out(lanes * vw),
            "tap_y": Out(lanes * vw * spec.fmt["layernorm"].bits),
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
                                       attn_latency=enc.att.latency, reader_depth=self._reader_depth,
                                       lanes=self.lanes, prefetch=bool(self.prefetch), vw=self.vw, **kw)

    def elaborate(self, platform):
        m = Module()
        sp, lay = self.spec, self.layout
        h, mt, wb, L, M, E = sp.hidden, self._mt, sp.word_bits, sp.labels, sp.members, self.lanes
        f = sp.fmt
        rb = _golden.record_bits(sp)
        ctr = self.counters
        aw = self._addr_width

        # ------------------------------------------------------------------ the sequencer's state
        IDLE, EMBED, LAYER, HEAD, OUT, COMB, DONE = range(7)
        phase = Signal(range(7))
        rnd = Signal(range(max(-(-M // E), 2)))      # member round: lane e runs member rnd*E + e
        li = Signal(range(max(sp.layers, 2)))
        cmd = Signal(AccelCommand(mt))
        accept = self.c_stream.valid & self.c_stream.ready
        m.d.comb += [self.c_stream.ready.eq(phase == IDLE), self.running.eq(phase != IDLE)]
        n = cmd.tokens
        # n*H - vw (the first channel of a phase's last activation-buffer beat), a register one cycle behind the
        # command: no multiplier between the command and the lanes' phase-end compares
        nh_last = Signal(range(mt * h), name="nh_last")
        m.d.sync += nh_last.eq(n * h - self.vw)
        in_embed, in_layer, in_head = phase == EMBED, phase == LAYER, phase == HEAD
        entering = Signal()          # the sequencer changes phase this cycle: every lane's phase state resets

        # token ids and types (shared by the lanes)
        ids = Array(Signal(bits_for(sp.vocab - 1), name=f"id{i}") for i in range(mt))
        tys = Array(Signal(bits_for(sp.types - 1), name=f"ty{i}") for i in range(mt))
        wptr = Signal(range(mt))
        m.d.comb += self.i_stream.ready.eq(phase == IDLE)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [ids[wptr].eq(self.i_stream.payload.id), tys[wptr].eq(self.i_stream.payload.type)]
            m.d.sync += wptr.eq(Mux(self.i_stream.payload.last | (wptr == mt - 1), 0, wptr + 1))

        fe, fs, fr = f["embedding"].frac, f["weight_scale"].frac, f["residual"].frac
        eb = f["embedding"].bits
        gq = sp.groups
        tw = sp.acc_width * sp.p
        nt = sp.tanh_len
        ib = bits_for(nt - 1)
        fl, fp, fcw, fens = f["logits"].frac, f["pooler"].frac, f["classifier_weight"].frac, f["ensemble_weight"].frac
        n_chunks = max(2, max(lay[k] for k in lay if k.startswith("wpr_")))
        depth = self._reader_depth

        # sequencer events the lanes' region bases follow (one register each, one adder: the member and layer
        # bases are never multiplied out in a cycle)
        ev = {k: Signal(name=f"ev_{k}") for k in ("start", "round", "layer0", "layer")}
        lanes = []
        for e in range(E):
            lanes.append(self._lane(m, e, locals()))

        # ------------------------------------------------------------------ memory port: one, shared
        if E == 1:
            ln = lanes[0]
            m.d.comb += [self.req_stream.valid.eq(ln["req_valid"]), self.req_stream.payload.eq(ln["req_addr"]),
                         ln["req_ready"].eq(self.req_stream.ready),
                         ln["rsp_valid"].eq(self.rsp_stream.valid), self.rsp_stream.ready.eq(ln["rsp_ready"])]
        else:
            # round-robin request arbiter; the lane of every request in flight in a tag FIFO (the memory
            # answers in request order), which also bounds the requests in flight
            m.submodules.tags = tags = fifo.SyncFIFO(width=bits_for(E - 1), depth=self._tag_depth)
            rr = Signal(range(E))
            grant = Signal(range(E))
            anyv = Signal()
            for off in range(E - 1, -1, -1):      # the first requesting lane at or after rr wins
                cand = Signal(range(E), name=f"cand{off}")
                m.d.comb += cand.eq(Mux(rr + off >= E, rr + off - E, rr + off))
                with m.If(Array(ln["req_valid"] for ln in lanes)[cand]):
                    m.d.comb += [grant.eq(cand), anyv.eq(1)]
            issue = self.req_stream.valid & self.req_stream.ready
            m.d.comb += [self.req_stream.valid.eq(anyv & tags.w_rdy),
                         self.req_stream.payload.eq(Array(ln["req_addr"] for ln in lanes)[grant]),
                         tags.w_data.eq(grant), tags.w_en.eq(issue)]
            for e, ln in enumerate(lanes):
                m.d.comb += [ln["req_ready"].eq(self.req_stream.ready & tags.w_rdy & anyv & (grant == e)),
                             ln["rsp_valid"].eq(self.rsp_stream.valid & tags.r_rdy & (tags.r_data == e))]
            with m.If(issue):
                m.d.sync += rr.eq(Mux(grant == E - 1, 0, grant + 1))
            m.d.comb += [self.rsp_stream.ready.eq(tags.r_rdy & Array(ln["rsp_ready"] for ln in lanes)[tags.r_data]),
                         tags.r_en.eq(self.rsp_stream.valid & self.rsp_stream.ready)]
        yb = f["layernorm"].bits
        for e, ln in enumerate(lanes):
            m.d.comb += ln["rsp_data"].eq(self.rsp_stream.payload)
            vw = self.vw
            for j, (tv, ty) in enumerate(ln["tap"]):
                i = e * vw + j
                m.d.comb += [self.tap_valid[i].eq(tv), self.tap_y[i * yb:(i + 1) * yb].eq(ty)]
        m.d.comb += self.error.eq(_tree_sum([ln["error"] for ln in lanes]) != 0)

        # ------------------------------------------------------------------ outputs and the combine unit
        ol = Signal(range(L + 1))
        oe = Signal(range(max(E, 2)))              # lane whose logits are on offer
        tot_w = f["ensemble_weight"].bits + f["logits"].bits + bits_for(M) + 1
        tot = Array(Signal(signed(tot_w), name=f"tot{i}") for i in range(L))
        o = self.o_stream
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
        lane_logit = Array(Array(ln["logit"][i] for i in range(L)) for ln in lanes)
        lane_ew = Array(ln["ew"] for ln in lanes)
        # e_m * logit of the lane on offer, registered (it is added on the member's last beat, at least one
        # cycle after the lane came on offer when L > 1; with L = 1 it is computed in the cycle)
        comb_p = [Signal(signed(f["ensemble_weight"].bits + f["logits"].bits), name=f"comb_p{i}") for i in range(L)]
        for i in range(L):
            if L > 1:
                m.d.sync += comb_p[i].eq(lane_ew[oe] * lane_logit[oe][i])
            else:
                m.d.comb += comb_p[i].eq(lane_ew[oe] * lane_logit[oe][i])
        lane_on = Array(ln["on"] for ln in lanes)
        m.d.comb += [o.payload.label.eq(ol), o.payload.member.eq(Mux(phase == COMB, M, rnd * E + oe)),
                     o.payload.pred.eq(besti),
                     o.payload.logit.eq(Mux(phase == COMB, Array(comb_vals)[ol], lane_logit[oe][ol])),
                     o.payload.last.eq((phase == COMB) & (ol == L - 1)),
                     o.valid.eq((phase == OUT) | (phase == COMB))]

        # ------------------------------------------------------------------ the sequence (barriers over lanes)
        def all_of(key):
            # the barrier waits for every lane's registered `done` (set the cycle after its `key` pulse): one
            # cycle per phase, and no combinational path from a lane's last beat through the sequencer into
            # every lane's phase reset
            v = Const(1)
            for ln in lanes:
                v = v & (ln["done"] | ~ln["on"])
            return v

        def enter(ph):
            m.d.comb += entering.eq(1)
            m.d.sync += phase.eq(ph)

        with m.If(accept):
            m.d.sync += [cmd.eq(self.c_stream.payload), rnd.eq(0)]
            m.d.sync += [tot[i].eq(0) for i in range(L)]
            m.d.comb += ev["start"].eq(1)
            enter(EMBED)
        with m.If(in_embed & all_of("fin")):
            enter(LAYER)
            m.d.sync += li.eq(0)
            m.d.comb += ev["layer0"].eq(1)
        with m.If(in_layer & all_of("fin")):
            with m.If(li == sp.layers - 1):
                enter(HEAD)
            with m.Else():
                enter(LAYER)
                m.d.sync += li.eq(li + 1)
                m.d.comb += ev["layer"].eq(1)
        with m.If(in_head & all_of("fin")):
            enter(OUT)
            m.d.sync += [ol.eq(0), oe.eq(0)]
        last_lane = (oe == E - 1) | ~lane_on[oe + 1] if E > 1 else Const(1)
        with m.If((phase == OUT) & o.ready):
            m.d.sync += ol.eq(ol + 1)
            with m.If(ol == L - 1):
                m.d.sync += ol.eq(0)
                m.d.sync += [tot[i].eq(tot[i] + comb_p[i]) for i in range(L)]
                with m.If(last_lane):
                    m.d.sync += oe.eq(0)
                    with m.If((rnd + 1) * E >= M):
                        enter(COMB)
                    with m.Else():
                        m.d.sync += rnd.eq(rnd + 1)
                        m.d.comb += ev["round"].eq(1)
                        enter(EMBED)
                with m.Else():
                    m.d.sync += oe.eq(oe + 1)
        with m.If((phase == COMB) & o.ready):
            m.d.sync += ol.eq(ol + 1)
            with m.If(ol == L - 1):
                enter(DONE)
        with m.If(phase == DONE):
            enter(IDLE)
        for ln in lanes:
            ln["clear_phase"]()

        # ------------------------------------------------------------------ counters
        with m.If(accept):
            m.d.sync += [getattr(ctr, k).eq(0) for k in self.COUNTERS]
        with m.Else():
            with m.If((phase != IDLE) & (phase != DONE)):
                m.d.sync += ctr.cycles.eq(ctr.cycles + 1)
                with m.If(in_embed):
                    m.d.sync += ctr.embed.eq(ctr.embed + 1)
                with m.If(lanes[0]["loading"]):
                    m.d.sync += ctr.load.eq(ctr.load + 1)
                with m.If(in_layer):
                    for i in range(sp.layers):
                        with m.If(li == i):
                            m.d.sync += getattr(ctr, f"layer{i}").eq(getattr(ctr, f"layer{i}") + 1)
                with m.If(in_head | (phase == OUT) | (phase == COMB)):
                    m.d.sync += ctr.head.eq(ctr.head + 1)
            for k in ("busy", "stall_weights", "stall_output", "vector_beats"):
                add = sum(Mux(ln["enc_fin"], getattr(ln["enc"].counters, k), 0) for ln in lanes)
                m.d.sync += getattr(ctr, k).eq(getattr(ctr, k) + add)
            with m.If(o.valid & ~o.ready):
                m.d.sync += ctr.out_wait.eq(ctr.out_wait + 1)
            m.d.sync += ctr.param_words.eq(ctr.param_words + sum(ln["pop"] for ln in lanes))
        return m

    def _lane(self, top, e, s):
        """Lane ``e``'s datapath (parameter reader, embedding, encoder layer, head) under the shared sequencer
        state ``s`` (the locals of :meth:`elaborate`); returns its handshake signals."""
        # the lane's own logic is a module of its own (lane{e}): the area report counts it apart from the
        # sequencer, and a lane's signals are driven from nowhere else
        m = Module()
        top.submodules[f"lane{e}"] = m
        sp, lay, rb, f = self.spec, self.layout, s["rb"], s["f"]
        h, mt, wb, L, M, E = s["h"], s["mt"], s["wb"], s["L"], s["M"], s["E"]
        aw, n, depth = s["aw"], s["n"], s["depth"]
        in_embed, in_layer, in_head, entering = s["in_embed"], s["in_layer"], s["in_head"], s["entering"]
        ids, tys, rnd, li, cmd = s["ids"], s["tys"], s["rnd"], s["li"], s["cmd"]
        fe, fs, fr, eb, gq, tw, nt, ib = (s[k] for k in ("fe", "fs", "fr", "eb", "gq", "tw", "nt", "ib"))
        fl, fp, fcw = s["fl"], s["fp"], s["fcw"]
        n_chunks = s["n_chunks"]

        def sig(shape, name, **kw):
            return Signal(shape, name=f"l{e}_{name}", **kw)

        m.submodules.enc = enc = self.encs[e]
        vw = self.vw
        # the embedding LayerNorm runs on the encoder layer's vector unit (its direct path, between commands)
        vu = _DirectVU(enc)
        me = sig(range(max(M, 2)), "member")
        on = sig(1, "on")
        m.d.comb += [me.eq(rnd * E + e), on.eq(me < M)]
        done = sig(1, "done")         # finished the sequencer's phase, waiting at its barrier
        fin = sig(1, "fin")           # finishes it this cycle
        lrun = sig(1, "lrun")         # the layer command is running (the memory port is the encoder's)
        req_valid, req_addr, req_ready = sig(1, "req_valid"), sig(aw, "req_addr"), sig(1, "req_ready")
        rsp_valid, rsp_data, rsp_ready = sig(1, "rsp_valid"), sig(wb, "rsp_data"), sig(1, "rsp_ready")

        # ------------------------------------------------------------------ parameter reader
        rd_go = sig(1, "rd_go")
        rd_base0, rd_base1 = sig(aw, "rd_base0"), sig(aw, "rd_base1")
        rd_count = sig(range(max(lay["words"], 2) + 1), "rd_count")
        rd_wpr = sig(range(n_chunks + 2), "rd_wpr")
        rd_inter = sig(1, "rd_inter")
        r_b0, r_b1 = sig(aw, "r_b0"), sig(aw, "r_b1")
        r_cnt, r_wpr, r_inter = Signal.like(rd_count, name=f"l{e}_r_cnt"), Signal.like(rd_wpr, name=f"l{e}_r_wpr"), sig(1, "r_inter")
        r_j = Signal.like(rd_count, name=f"l{e}_r_j")
        r_half = sig(1, "r_half")
        r_k = Signal.like(rd_wpr, name=f"l{e}_r_k")
        r_active = sig(1, "r_active")
        outstanding = sig(range(depth + 1), "outstanding")
        rd_idle = ~r_active
        m.submodules.wq = wq = fifo.SyncFIFOBuffered(width=wb, depth=depth)
        m.submodules.tq = tq = fifo.SyncFIFOBuffered(width=1, depth=depth)
        rvalid = sig(1, "rvalid")
        raddr = sig(aw, "raddr")
        tag = sig(1, "tag")
        m.d.comb += [
            rvalid.eq(r_active & (outstanding < depth) & tq.w_rdy),
            raddr.eq(Mux(r_inter & r_half, r_b1, r_b0) + r_j),
            tag.eq(Mux(r_inter, r_half, r_k == r_wpr - 1)),
        ]
        issue = rvalid & req_ready & ~lrun
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
        m.d.comb += [wq.w_data.eq(rsp_data), wq.w_en.eq(rsp_valid & ~lrun)]
        # record assembler
        chunks = [sig(wb, f"chunk{i}") for i in range(n_chunks)]
        a_k = sig(range(n_chunks), "a_k")
        rec_valid = sig(1, "rec_valid")
        rec_take = sig(1, "rec_take")
        rec = sig(n_chunks * wb, "rec")
        m.d.comb += rec.eq(Cat(*chunks))
        pop = sig(1, "pop")
        m.d.comb += pop.eq(wq.r_rdy & tq.r_rdy & (~rec_valid | rec_take))
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
        if self.prefetch:
            img_words = layer_offsets(h, sp.ffn, sp.p, sp.s, wb)["words"]
            pf = WordPrefetch(word_bits=wb, addr_width=aw, max_count=img_words, depth=self.prefetch,
                              inflight=self.prefetch_inflight)
            m.submodules.pf = pf
            m.d.comb += [pf.req_stream.valid.eq(enc.req_stream.valid), pf.req_stream.payload.eq(enc.req_stream.payload),
                         enc.req_stream.ready.eq(pf.req_stream.ready),
                         enc.rsp_stream.valid.eq(pf.rsp_stream.valid), enc.rsp_stream.payload.eq(pf.rsp_stream.payload),
                         pf.rsp_stream.ready.eq(enc.rsp_stream.ready)]
            wreq, wrsp, pf_ready, pf_error = pf.mem_req, pf.mem_rsp, pf.c_stream.ready, pf.error
        else:
            wreq, wrsp, pf, pf_ready, pf_error = enc.req_stream, enc.rsp_stream, None, Const(1), Const(0)
        m.d.comb += [req_valid.eq(Mux(lrun, wreq.valid, rvalid)),
                     req_addr.eq(Mux(lrun, wreq.payload, raddr)),
                     wreq.ready.eq(req_ready & lrun),
                     wrsp.valid.eq(rsp_valid & lrun),
                     wrsp.payload.eq(rsp_data),
                     rsp_ready.eq(Mux(lrun, wrsp.ready, 1))]

        def field(kind, i):
            off = sum(rb[kind][:i])
            return rec[off: off + rb[kind][i]]

        def code(width):
            return rec[:width].as_signed()

        # region addresses (member me, layer li)
        mbase = sig(aw, "mbase")
        lbase = sig(aw, "lbase")
        # = members + me * member_words and mbase + layers + li * layer_words, kept as registers that follow
        # the sequencer's events (valid from the first cycle of each phase)
        ev = s["ev"]
        with m.If(ev["start"]):
            m.d.sync += mbase.eq(lay["members"] + e * lay["member_words"])
        with m.Elif(ev["round"]):
            m.d.sync += mbase.eq(mbase + E * lay["member_words"])
        first = sig(1, "first")       # the member's first layer: the only one whose input is replayed
        with m.If(ev["layer0"]):
            m.d.sync += [lbase.eq(mbase + lay["layers"]), first.eq(1)]
        with m.Elif(ev["layer"]):
            m.d.sync += [lbase.eq(lbase + lay["layer_words"]), first.eq(0)]

        rq = sig(range(8), "rq")                          # reader command step within a phase
        tq_i = sig(range(max(mt, h) + 1), "tq_i")        # token / channel of the command step

        def go(base0, count, wpr, inter=0, base1=0):
            m.d.comb += [rd_go.eq(1), rd_base0.eq(base0), rd_base1.eq(base1), rd_count.eq(count), rd_wpr.eq(wpr),
                         rd_inter.eq(inter)]

        started = rd_go & rd_idle

        # ------------------------------------------------------------------ activation buffer
        # vw codes a word: the embedding LayerNorm writes a beat of vw channels a cycle, the replay reads one
        m.submodules.abuf = abuf = Memory(shape=unsigned(vw * f["layernorm"].bits), depth=mt * h // vw, init=[])
        a_wr, a_rd = abuf.write_port(), abuf.read_port()
        a_ptr = sig(range(mt * h + 1), "a_ptr")

        cc = sig(range(max(2 * h + sp.groups, L * h, h * mt) + 2), "cc")   # records consumed in the phase
        ct = sig(range(mt + 1), "ct")
        cch = sig(range(h + 1), "cch")
        wrow = sig(h, "wrow")
        wscale = sig(signed(f["weight_scale"].bits), "wscale")
        cstate = sig(2, "cstate")        # embed: 0 table, 1 word record, 2 pairs

        # ------------------------------------------------------------------ EMBED
        m.d.comb += [vu.p_stream.payload.addr.eq(cc), vu.p_stream.payload.scale.eq(0), vu.p_stream.payload.bias.eq(0),
                     vu.p_stream.payload.gamma.eq(field("emb_ln", 0).as_signed()),
                     vu.p_stream.payload.beta.eq(field("emb_ln", 1).as_signed()),
                     vu.p_stream.payload.k.eq(1), vu.p_stream.payload.last.eq(cc == h - 1)]
        # a token's position and type rows come as Hc word pairs of c codes each (golden.accelerator's packed
        # tables); a pair is latched into two shift registers that give one channel's codes a cycle
        # u = min(vw, c) channels a step (vw and c are powers of two); vw / u steps make a vector-unit beat
        c_e, hw_e = sp.emb_codes, sp.emb_words
        u = min(vw, c_e)
        ng = vw // u
        posr, typr = sig(c_e * eb, "posr"), sig(c_e * eb, "typr")
        have = sig(1, "have")           # a pair is in posr / typr
        cj = sig(range(c_e + 1), "cj")  # the channel of the pair at their low end
        # the word row shifts by u bits a step (no H-way multiplexer); channel j of a step: bit j, codes j
        esums = []
        for j in range(u):
            term = Mux(wrow[j], wscale, -wscale)
            es = sig(signed(f["residual"].bits), "esum" if u == 1 else f"esum{j}")
            _fit(m, es, _align([(term, fs), (posr[j * eb:(j + 1) * eb].as_signed(), fe),
                                (typr[j * eb:(j + 1) * eb].as_signed(), fe)], fr), f["residual"])
            esums.append(es)
        gs = sig(range(ng), "gs")       # the step within the beat
        gx = [sig(signed(f["residual"].bits), f"gx{i}") for i in range((ng - 1) * u)]   # the earlier steps'
        beat_x = gx + esums
        m.d.comb += [vu.i_stream.payload.acc[j].eq(0) for j in range(vw)]
        m.d.comb += [vu.i_stream.payload.x[j].eq(beat_x[j]) for j in range(vw)]
        l_embed = in_embed & on
        # the token's record offsets, two register stages behind tq_i (the token id and type looked up, then
        # scaled): a read that uses them starts after the token's 2*Hc >= 2 pair words were requested, at least
        # two cycles after tq_i last changed
        id_r = sig(bits_for(sp.vocab - 1), "id_r")
        ty_r = sig(bits_for(max(sp.types - 1, 1)), "ty_r")
        t_r = sig(range(mt), "t_r")
        w_ofs, p_ofs, y_ofs = sig(aw, "w_ofs"), sig(aw, "p_ofs"), sig(aw, "y_ofs")
        m.d.sync += [id_r.eq(ids[tq_i]), ty_r.eq(tys[tq_i]), t_r.eq(tq_i),
                     w_ofs.eq(lay["word"] + id_r * lay["wpr_word"]), p_ofs.eq(lay["position"] + t_r * hw_e),
                     y_ofs.eq(lay["type"] + ty_r * hw_e)]
        with m.If(l_embed):
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
                    step = sig(1, "step")           # u channels of the pair: into gx, or with them the beat
                    pair_end = sig(1, "pair_end")
                    beat = gs == ng - 1
                    m.d.comb += [
                        vu.i_stream.valid.eq(have & beat),
                        step.eq(have & (~beat | vu.i_stream.ready)),
                        pair_end.eq((cj == c_e - u) | (cch == h - u)),
                        # the next pair as the current one's last step goes (never past the token's last)
                        rec_take.eq(rec_valid & (~have | step & pair_end & (cch != h - u))),
                    ]
                    with m.If(step):
                        m.d.sync += [cch.eq(cch + u), wrow.eq(wrow >> u), posr.eq(posr >> (u * eb)),
                                     typr.eq(typr >> (u * eb)), cj.eq(cj + u), gs.eq(Mux(beat, 0, gs + 1))]
                        if ng > 1:
                            with m.Switch(gs):
                                for g in range(ng - 1):
                                    with m.Case(g):
                                        m.d.sync += [gx[g * u + j].eq(esums[j]) for j in range(u)]
                        with m.If(pair_end):
                            m.d.sync += have.eq(0)
                        with m.If(cch == h - u):
                            m.d.sync += [cstate.eq(1), ct.eq(ct + 1)]
                    with m.If(rec_take):
                        m.d.sync += [posr.eq(rec[:c_e * eb]), typr.eq(rec[wb: wb + c_e * eb]), have.eq(1), cj.eq(0)]
            with m.Switch(rq):
                with m.Case(0):
                    go(mbase + lay["emb_ln"], h * lay["wpr_emb_ln"], lay["wpr_emb_ln"])
                    with m.If(started):
                        m.d.sync += [rq.eq(1), tq_i.eq(0)]
                with m.Case(1):
                    go(mbase + w_ofs, lay["wpr_word"], lay["wpr_word"])
                    with m.If(started):
                        m.d.sync += rq.eq(2)
                with m.Case(2):
                    go(mbase + p_ofs, hw_e, 2, 1, mbase + y_ofs)
                    with m.If(started):
                        m.d.sync += [rq.eq(Mux(tq_i == n - 1, 3, 1)), tq_i.eq(tq_i + 1)]
        m.d.comb += vu.o_stream.ready.eq(1)
        emb_take = vu.o_stream.valid
        with m.If(l_embed & (a_ptr == s["nh_last"]) & emb_take):
            m.d.comb += fin.eq(1)

        # ------------------------------------------------------------------ layer: load, then the command
        loading = sig(1, "loading")
        m.d.comb += loading.eq(in_layer & on & ~lrun & ~done)
        m.d.comb += [enc.t_stream.payload.addr.eq(cc), enc.t_stream.payload.t.eq(rec[:tw]),
                     enc.t_stream.payload.pol.eq(rec[tw: tw + sp.p]), enc.t_stream.payload.last.eq(cc == gq - 1)]
        vcc = sig(range(2 * h + 1), "vcc")
        m.d.comb += vcc.eq(cc - gq)
        m.d.comb += [enc.p_stream.payload.table.eq(vcc >= h), enc.p_stream.payload.addr.eq(Mux(vcc >= h, vcc - h, vcc)),
                     enc.p_stream.payload.scale.eq(field("vec", 0).as_signed()),
                     enc.p_stream.payload.bias.eq(field("vec", 1).as_signed()),
                     enc.p_stream.payload.gamma.eq(field("vec", 2).as_signed()),
                     enc.p_stream.payload.beta.eq(field("vec", 3).as_signed())]
        replay = _Copy(m, f"l{e}_replay", n, mt, h // vw, h // vw, enc.i_stream.ready)
        m.d.comb += [a_rd.addr.eq(replay.lin), a_rd.en.eq(replay.advance),
                     enc.i_stream.valid.eq(replay.b_valid), enc.i_stream.payload.x.eq(a_rd.data),
                     enc.i_stream.payload.last.eq(replay.b_last)]
        loads_done = cc == gq + 2 * h
        with m.If(loading):
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
                    # later layers run on the previous one's output, left in place in the encoder layer
                    m.d.comb += replay.start.eq(started & first)
                    with m.If(started):
                        m.d.sync += rq.eq(1)
                with m.Case(1):
                    go(lbase + lay["vec"], 2 * h * lay["wpr_vec"], lay["wpr_vec"])
                    with m.If(started):
                        m.d.sync += rq.eq(2)
        m.d.comb += [enc.c_stream.valid.eq(loading & loads_done & ~replay.busy & (rq == 2) & pf_ready),
                     enc.c_stream.payload.tokens.eq(n), enc.c_stream.payload.keys.eq(cmd.length),
                     enc.c_stream.payload.base.eq(lbase + lay["image"])]
        if pf is not None:       # the prefetch starts with the layer command, on the same weight image
            m.d.comb += [pf.c_stream.valid.eq(enc.c_stream.valid & enc.c_stream.ready),
                         pf.c_stream.payload.base.eq(lbase + lay["image"]), pf.c_stream.payload.count.eq(img_words)]
        eo = enc.o_stream
        # token 0's output bits (shifted in, channel 0 first, into the low H bits); in the head the register
        # rotates by one memory word per pooler-record word, so its low word is always the word's bits
        wpp = lay["wpr_pooler"]
        x0 = sig(wpp * wb, "x0")
        pool_pop = sig(1, "pool_pop")
        m.d.comb += eo.ready.eq(1)
        run_take = eo.valid & in_layer & lrun
        with m.If(run_take & (a_ptr < h)):      # vw bits a beat, channel order
            m.d.sync += x0[:h].eq(Cat(x0[vw:h], eo.payload.bit)) if h > vw else x0[:h].eq(eo.payload.bit)
        with m.Elif(pool_pop):
            m.d.sync += x0.eq(Cat(x0[wb:], x0[:wb])) if wpp > 1 else []
        # the activation buffer holds the embedding LayerNorm's output, the first layer's input: later layers
        # run on their predecessor's output where the encoder layer left it, so their outputs are not stored
        lw = vw.bit_length() - 1
        m.d.comb += [a_wr.addr.eq(a_ptr >> lw), a_wr.en.eq(emb_take & l_embed),
                     a_wr.data.eq(vu.o_stream.payload.y.as_value())]
        with m.If(a_wr.en | run_take):      # a_ptr counts channels
            m.d.sync += a_ptr.eq(a_ptr + vw)
        yb = f["layernorm"].bits
        # taps: the embedding's and then every layer output beat's vw codes
        eo_y = [eo.payload.y] if vw == 1 else [eo.payload.y[j] for j in range(vw)]
        tap = [(Mux(in_layer, run_take, a_wr.en), Mux(in_layer, eo_y[j], vu.o_stream.payload.y[j])) for j in range(vw)]
        with m.If(enc.c_stream.valid & enc.c_stream.ready):
            m.d.sync += [lrun.eq(1), a_ptr.eq(0)]
        with m.If(run_take & eo.payload.final):
            m.d.comb += fin.eq(1)
            m.d.sync += lrun.eq(0)
        enc_run_d = sig(1, "enc_run_d")
        m.d.sync += enc_run_d.eq(enc.running)
        enc_fin = enc_run_d & ~enc.running

        # ------------------------------------------------------------------ HEAD
        l_head = in_head & on
        # the head's H-entry tables are memories (EBR, synchronous read): tanh indices and pooler outputs
        m.submodules.idx = idx_mem = Memory(shape=unsigned(ib), depth=h, init=[])
        m.submodules.pv = pv_mem = Memory(shape=signed(f["pooler"].bits), depth=h, init=[])
        idx_w, idx_r = idx_mem.write_port(), idx_mem.read_port()
        pv_w, pv_r = pv_mem.write_port(), pv_mem.read_port()
        acc_w = f["pooler"].bits + f["classifier_weight"].bits + bits_for(h) + 1
        cacc = Array(sig(signed(acc_w), f"cacc{i}") for i in range(L))
        logit = Array(sig(signed(f["logits"].bits), f"logit{i}") for i in range(L))
        ew = sig(signed(f["ensemble_weight"].bits), "ew")
        hstate = sig(range(6), "hstate")    # 0 pooler, 1 tanh, 2 classifier, 3 bias, 4 ensemble weight, 5 done
        hl = sig(range(L + 1), "hl")
        hk = sig(range(h + 1), "hk")
        # pooler: popcount of the XNOR of token 0's bits with row c, one memory word at a time as the record's
        # words arrive (a word's weight bits are those below H), the record's count latched with its last word
        m.d.comb += pool_pop.eq(pop & l_head & (hstate == 0))
        wmask = Array(Const(sum(1 << j for j in range(wb) if k * wb + j < h), wb) for k in range(wpp))
        agree = sig(wb, "agree")
        m.d.comb += agree.eq(~(wq.r_data ^ x0[:wb]) & wmask[a_k])
        pc_acc = sig(range(h + 1), "pc_acc")
        pc = sig(range(h + 1), "pc")
        pc_now = pc_acc + _tree_sum([agree[i] for i in range(wb)])
        with m.If(pool_pop):
            m.d.sync += pc_acc.eq(Mux(tq.r_data, 0, pc_now))
            with m.If(tq.r_data):
                m.d.sync += pc.eq(pc_now)
        pscale = field("pooler", 1).as_signed()
        pbias = field("pooler", 2).as_signed()
        py = sig(signed(f["residual"].bits), "py")
        dot = sig(signed(bits_for(h) + 2), "dot")
        m.d.comb += dot.eq(2 * pc - h)
        # registered product (the multiplier's output register), then bias, saturation and the tanh index into
        # the index table one cycle after the record is taken
        pprod = sig(signed(len(pscale) + len(dot)), "pprod")
        pbias_r = sig(signed(len(pbias)), "pbias_r")
        p_we = sig(1, "p_we")
        p_addr = sig(range(h), "p_addr")
        m.d.sync += [pprod.eq(pscale * dot), pbias_r.eq(pbias), p_we.eq(0), p_addr.eq(cc)]
        _fit(m, py, _align([(pprod, fs), (pbias_r, f["bias"].frac)], fr), f["residual"])
        pidx = sig(ib, "pidx")
        rel = sig(signed(f["residual"].bits + 2), "rel")
        m.d.comb += rel.eq(py - sp.tanh_c0)
        with m.If(rel < 0):
            m.d.comb += pidx.eq(0)
        with m.Elif(rel > nt - 1):
            m.d.comb += pidx.eq(nt - 1)
        with m.Else():
            m.d.comb += pidx.eq(rel)
        bsum = sig(signed(f["logits"].bits), "bsum")
        _fit(m, bsum, _align([(cacc[hl], fp + fcw), (code(f["logits"].bits), fl)], fl), f["logits"])
        # the classifier's read of pooler output hk: the table is read synchronously (EBR), so its address runs
        # one beat ahead (the value hk takes after this cycle)
        cls_take = l_head & rec_valid & (hstate == 2)
        m.d.comb += [idx_w.addr.eq(p_addr), idx_w.data.eq(pidx), idx_w.en.eq(p_we), idx_r.addr.eq(tq_i),
                     pv_w.addr.eq(cc), pv_w.data.eq(code(f["pooler"].bits)),
                     pv_r.addr.eq(Mux(cls_take, Mux(hk == h - 1, 0, hk + 1), hk))]
        # the classifier MAC in two stages: the product registered (the multiplier's output register), then
        # the accumulation; a bias waits while its label's last product is still on its way (only with L = 1)
        mac_v = sig(1, "mac_v")
        mac_l = sig(range(max(L, 2)), "mac_l")
        mac_p = sig(signed(f["pooler"].bits + f["classifier_weight"].bits), "mac_p")
        mac_wait = sig(1, "mac_wait")
        m.d.sync += [mac_v.eq(0), mac_l.eq(hl), mac_p.eq(pv_r.data * code(f["classifier_weight"].bits))]
        with m.If(mac_v):
            m.d.sync += cacc[mac_l].eq(cacc[mac_l] + mac_p)
        m.d.comb += mac_wait.eq(mac_v & (mac_l == hl))
        with m.If(l_head):
            m.d.comb += rec_take.eq(~((hstate == 3) & mac_wait))
            with m.If(rec_valid):
                with m.Switch(hstate):
                    with m.Case(0):
                        m.d.sync += [cc.eq(cc + 1), p_we.eq(1)]
                        with m.If(cc == h - 1):
                            m.d.sync += [hstate.eq(1), cc.eq(0)]
                    with m.Case(1):
                        m.d.comb += pv_w.en.eq(1)
                        m.d.sync += cc.eq(cc + 1)
                        with m.If(cc == h - 1):
                            m.d.sync += [hstate.eq(2), hl.eq(0), hk.eq(0)]
                            m.d.sync += [cacc[i].eq(0) for i in range(L)]
                    with m.Case(2):
                        m.d.sync += mac_v.eq(1)
                        with m.If(hk == h - 1):
                            m.d.sync += [hk.eq(0), hl.eq(hl + 1)]
                            with m.If(hl == L - 1):
                                m.d.sync += [hstate.eq(3), hl.eq(0)]
                        with m.Else():
                            m.d.sync += hk.eq(hk + 1)
                    with m.Case(3):
                        with m.If(~mac_wait):
                            m.d.sync += [logit[hl].eq(bsum), hl.eq(hl + 1)]
                            with m.If(hl == L - 1):
                                m.d.sync += [hstate.eq(4), hl.eq(0)]
                    with m.Case(4):
                        m.d.sync += [ew.eq(code(f["ensemble_weight"].bits)), hstate.eq(5)]
            with m.Switch(rq):
                with m.Case(0):
                    go(mbase + lay["pooler"], h * lay["wpr_pooler"], lay["wpr_pooler"])
                    with m.If(started):
                        m.d.sync += [rq.eq(1), tq_i.eq(0)]
                with m.Case(1):
                    with m.If(hstate != 0):
                        go(lay["tanh"] + idx_r.data, 1, 1)
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
                    go(lay["ensemble"] + me, 1, 1)
                    with m.If(started):
                        m.d.sync += rq.eq(5)
            with m.If(hstate == 5):
                m.d.comb += fin.eq(1)

        def clear_phase():
            # after the sequencer's statements: a phase change wins over the lane's own updates
            with m.If(entering):
                m.d.sync += [rq.eq(0), cc.eq(0), tq_i.eq(0), cstate.eq(0), hstate.eq(0), a_ptr.eq(0), done.eq(0)]
            with m.Elif(fin):
                m.d.sync += done.eq(1)

        return dict(tap=tap, on=on, done=done, fin=fin, loading=loading, enc=enc, enc_fin=enc_fin, pop=pop, logit=logit,
                    error=pf_error,
                    ew=ew, req_valid=req_valid, req_addr=req_addr, req_ready=req_ready, rsp_valid=rsp_valid,
                    rsp_data=rsp_data, rsp_ready=rsp_ready, clear_phase=clear_phase)


class _DirectVU:
    """The encoder layer's vector-unit ports under the names of a :class:`~bebert.hw.vector.VectorUnit`'s."""

    def __init__(self, enc):
        self.p_stream, self.i_stream, self.o_stream = enc.vp_stream, enc.v_stream, enc.vo_stream


def _tree_sum(terms):
    """A balanced adder tree over Amaranth values (a chain of adds is ``len(terms)`` deep)."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


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
