"""A register-tiled matrix-vector product for small weight matrices, as an LLVM intrinsic.

Written in numba, ``dst[cols] += src @ M[:, cols]`` loads and stores the accumulator once
per row (or per four rows): LLVM cannot keep it in registers because it cannot prove that
``dst`` and ``M`` do not overlap. For the small matrices of per-sample models (16 x 64,
32 x 128) that traffic and the per-row loop overhead cost twice the arithmetic. This
intrinsic emits the loop with its accumulators as LLVM vector values: for each tile of
``TILE`` vectors of ``LANES`` columns it walks every row of ``M`` with the partial sums
held in registers, then stores the tile once. LLVM lowers the vectors to whatever the
host has (AVX-512: one register per vector; AVX2: two).

On an unpacked ``M`` it pays while ``M`` sits in L1 (below ``SMALL`` weights); larger
matrices are read through panels (below). Weights may be float32, float16 bits (uint16)
or int8, widened in registers; int8 scales are the caller's business, as everywhere.

``tile_matmat4`` does the same for four rows sharing each weight load (four streams, or
four time steps of a hoisted input product). Walking an unpacked matrix down its columns
is slow here (rows 4 KiB apart share one L1 set), so the kernels call both on column
panels (``packing.pack_panels``: each panel's rows contiguous) for every large product
(``cpu_kernels._panel_acc``): 64 x 256 x 1024 at 40 GMAC/s on one AVX2 core, where the
row-wise loop reached 15 and torch 35.

``assume_shape`` is a hint for sized kernels: an array with its shape given as constants.
"""

from __future__ import annotations

from llvmlite import binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

from .weights import scaled_type

LANES = 16  # float32 lanes per vector (one AVX-512 register)
TILE = 4  # vectors accumulated together: 64 columns per pass over the rows
SMALL = 16384  # weights (rows x columns) up to which tiles beat the row-wise loop


def _widen(builder, raw, dtype):
    """A vector of stored weights -> <LANES x float>."""
    vf = ir.VectorType(ir.FloatType(), LANES)
    if isinstance(dtype, types.Float):
        return raw
    if dtype.bitwidth == 16:  # float16 bits
        return builder.fpext(builder.bitcast(raw, ir.VectorType(ir.HalfType(), LANES)), vf)
    return builder.sitofp(raw, vf)  # int8


def _sum_rows(context, builder, nrows, x_ptrs, y_vecs, weight_ptr, w_dtype, fresh=False, finish=None):
    """The loop both code generators emit, with every partial sum in a register.

    For i < ``nrows``: ``y[r][k] += x[r][i] * W_k(i)`` for each source row r and vector k.
    ``x_ptrs``: per source row, a ``float*`` to its element 0; ``y_vecs``: per row, per
    vector, a ``<LANES x float>*`` (loaded before the loop, or zeros when ``fresh``; stored
    after it);
    ``weight_ptr(i, k)``: a pointer to the ``LANES`` stored weights of vector k in row i,
    widened from ``w_dtype``. Each sum is one chain of ``llvm.fmuladd`` down the rows.
    ``finish(k, v)``, if given, maps vector k's finished sum before it is stored.
    """
    intp = context.get_value_type(types.intp)
    vf = ir.VectorType(ir.FloatType(), LANES)
    vraw = ir.VectorType(context.get_value_type(w_dtype), LANES)
    zero_i, one_i = ir.Constant(intp, 0), ir.Constant(intp, 1)
    fmuladd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vf, [vf, vf, vf]), f"llvm.fmuladd.v{LANES}f32")
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
    width = len(y_vecs[0])
    if fresh:
        start = [[ir.Constant(vf, None) for _ in row] for row in y_vecs]
    else:
        start = [[builder.load(p, align=4) for p in row] for row in y_vecs]
    entry = builder.block
    body = builder.append_basic_block("rows.body")
    done = builder.append_basic_block("rows.done")
    builder.cbranch(builder.icmp_signed(">", nrows, zero_i), body, done)
    builder.position_at_end(body)
    i = builder.phi(intp)
    i.add_incoming(zero_i, entry)
    accs = [[builder.phi(vf) for _ in range(width)] for _ in y_vecs]
    for acc_row, start_row in zip(accs, start):
        for a, v in zip(acc_row, start_row):
            a.add_incoming(v, entry)
    weights = [_widen(builder, builder.load(builder.bitcast(weight_ptr(i, k), vraw.as_pointer()), align=1),
                      w_dtype) for k in range(width)]
    new = []
    for x, acc_row in zip(x_ptrs, accs):
        xi = builder.load(builder.gep(x, [i]))
        xs = builder.shuffle_vector(builder.insert_element(ir.Constant(vf, ir.Undefined), xi,
                                                          ir.Constant(ir.IntType(32), 0)),
                                    ir.Constant(vf, ir.Undefined), splat_mask)
        new.append([builder.call(fmuladd, [xs, w, a]) for w, a in zip(weights, acc_row)])
    i_next = builder.add(i, one_i)
    tail = builder.block
    i.add_incoming(i_next, tail)
    for acc_row, new_row in zip(accs, new):
        for a, v in zip(acc_row, new_row):
            a.add_incoming(v, tail)
    builder.cbranch(builder.icmp_signed("<", i_next, nrows), body, done)
    builder.position_at_end(done)
    finals = []  # every phi first: LLVM wants them at the top of the block
    for start_row, new_row in zip(start, new):
        for s0_, v in zip(start_row, new_row):
            final = builder.phi(vf)
            final.add_incoming(s0_, entry)
            final.add_incoming(v, tail)
            finals.append(final)
    for (k, p), final in zip(((k, p) for row in y_vecs for k, p in enumerate(row)), finals):
        builder.store(finish(k, final) if finish else final, p, align=4)


def _codegen(rows: int, tile: int, affine: bool = False):
    """Code generator for ``rows`` source/destination rows sharing each weight load.

    ``affine``: the sums start from zero instead of ``dst`` (``=`` rather than ``+=``), and
    two more arguments come after ``M``, ``scale`` and ``bias``: each finished sum is
    multiplied by its column's scale (int8 ``M`` only) and gets its bias added (unless
    ``bias`` is None) in registers. LLVM fuses the multiply and the add into one multiply-add
    (numba's target allows it without fast-math flags), as ``cpu_kernels._finish`` does in a
    pass over memory.
    """

    def codegen(context, builder, signature, args):
        if affine:
            src_t, M_t, scale_t, bias_t, dst_t = (signature.args[i] for i in (0, 5, 6, 7, 8))
            (a_src, a_s0, a_s1, a_ds0, a_ds1, a_M, a_scale, a_bias, a_dst, a_d0, a_d1, a_dd0, a_dd1, a_col0,
             a_ncols) = args
        else:
            src_t, M_t, dst_t = signature.args[0], signature.args[5], signature.args[6]
            (a_src, a_s0, a_s1, a_ds0, a_ds1, a_M, a_dst, a_d0, a_d1, a_dd0, a_dd1, a_col0, a_ncols) = args
        intp = context.get_value_type(types.intp)
        vf = ir.VectorType(ir.FloatType(), LANES)
        zero_i = ir.Constant(intp, 0)

        src_a = context.make_array(src_t)(context, builder, a_src)
        dst_a = context.make_array(dst_t)(context, builder, a_dst)
        m_a = context.make_array(M_t)(context, builder, a_M)
        x_ptrs, y_ptrs = [], []
        for r in range(rows):
            rr = ir.Constant(intp, r)
            si = [builder.add(a_s0, builder.mul(rr, a_ds0)), builder.add(a_s1, builder.mul(rr, a_ds1)), zero_i]
            di = [builder.add(a_d0, builder.mul(rr, a_dd0)), builder.add(a_d1, builder.mul(rr, a_dd1)), a_col0]
            x_ptrs.append(cgutils.get_item_pointer(context, builder, src_t, src_a, si))
            y_ptrs.append(cgutils.get_item_pointer(context, builder, dst_t, dst_a, di))
        nrows = builder.extract_value(m_a.shape, 0)
        row_len = builder.extract_value(m_a.shape, 1)  # elements per row (C-contiguous)
        m_col0 = builder.gep(m_a.data, [a_col0])  # &M[0, col0]
        # per-column vectors for the affine epilogue: &scale[col0] (int8 M) and &bias[col0]
        vec_cols = []
        if affine and scaled_type(M_t.dtype):
            vec_cols.append(("mul", context.make_array(scale_t)(context, builder, a_scale).data))
        if affine and isinstance(bias_t, types.Array):
            vec_cols.append(("add", context.make_array(bias_t)(context, builder, a_bias).data))
        vec_cols = [(op, builder.gep(data, [a_col0])) for op, data in vec_cols]

        def tile_pass(c, width):
            """Accumulate columns [c, c + width*LANES) of every row over all of M."""
            offs = [builder.add(c, ir.Constant(intp, k * LANES)) for k in range(width)]
            y_tile = [[builder.bitcast(builder.gep(y, [o]), vf.as_pointer()) for o in offs] for y in y_ptrs]

            def finish(k, v):
                for op, base in vec_cols:  # LLVM contracts mul then add into one multiply-add
                    w = builder.load(builder.bitcast(builder.gep(base, [offs[k]]), vf.as_pointer()), align=4)
                    v = builder.fmul(v, w) if op == "mul" else builder.fadd(v, w)
                return v

            _sum_rows(context, builder, nrows, x_ptrs, y_tile,
                      lambda i, k: builder.gep(m_col0, [builder.add(builder.mul(i, row_len), offs[k])]), M_t.dtype,
                      affine, finish if vec_cols else None)

        full = ir.Constant(intp, tile * LANES)
        n_tiles = builder.sdiv(a_ncols, full)
        with cgutils.for_range(builder, n_tiles) as loop:
            tile_pass(builder.mul(loop.index, full), tile)
        done_cols = builder.mul(n_tiles, full)
        lane = ir.Constant(intp, LANES)
        n_single = builder.sdiv(builder.sub(a_ncols, done_cols), lane)
        with cgutils.for_range(builder, n_single) as loop:
            tile_pass(builder.add(done_cols, builder.mul(loop.index, lane)), 1)
        return builder.add(done_cols, builder.mul(n_single, lane))

    return codegen


def _check(src, M, dst) -> bool:
    if not all(isinstance(a, types.Array) for a in (src, M, dst)):
        return False
    if src.ndim != 3 or dst.ndim != 3 or M.ndim != 2 or src.dtype != types.float32 or dst.dtype != types.float32:
        return False
    return M.dtype in (types.float32, types.uint16, types.int8)


def _typer(rows: int, tile: int):
    def typer(typingctx, src, s0, s1, ds0, ds1, M, dst, d0, d1, dd0, dd1, col0, ncols):
        if not _check(src, M, dst):
            return None
        return types.intp(src, s0, s1, ds0, ds1, M, dst, d0, d1, dd0, dd1, col0, ncols), _codegen(rows, tile)

    return typer


@intrinsic
def tile_matvec_affine(typingctx, src, s0, s1, ds0, ds1, M, scale, bias, dst, d0, d1, dd0, dd1, col0, ncols):
    """A product into a fresh row, scaled (int8) and with a bias, as ``tile_matvec`` computes it.

    ``dst[d0, d1, col0:col0+n] = src[s0, s1, :] @ M[:, col0:col0+n] (* scale[col0:col0+n] for
    int8 M) (+ bias[col0:col0+n] unless ``bias`` is None)``; returns n like ``tile_matvec``.
    ``scale``, ``bias``: C-contiguous 1D float32 (``scale`` is read for int8 M only). The sums
    start from zero registers (the bits of zeroing the row first, without the pass, which
    LLVM made a call to memset); scale and bias are applied before the one store (the pass
    that added the bias cost ~50 instructions of an LSTM 1->16 step). For int8 with a bias,
    scale and bias are one fused multiply-add.
    """
    if not _check(src, M, dst) or not (isinstance(scale, types.Array) and scale.dtype == types.float32):
        return None
    if not (isinstance(bias, types.NoneType) or (isinstance(bias, types.Array) and bias.dtype == types.float32)):
        return None
    sig = types.intp(src, s0, s1, ds0, ds1, M, scale, bias, dst, d0, d1, dd0, dd1, col0, ncols)
    return sig, _codegen(1, TILE, affine=True)


def _make(rows: int, tile: int, name: str):
    typer = _typer(rows, tile)
    typer.__name__ = name
    typer.__doc__ = f"""Register-tiled product for {rows} row(s); see the module docstring.

    ``dst[d0 + r*dd0, d1 + r*dd1, col0:col0+n] += src[s0 + r*ds0, s1 + r*ds1, :] @ M[:, col0:col0+n]``
    for r in 0..{rows - 1}; returns n, ``ncols`` rounded down to a multiple of ``LANES`` (the
    caller finishes the rest). ``src``/``dst``: C-contiguous 3D float32; ``M``: C-contiguous 2D
    float32, uint16 (float16 bits) or int8. No bounds checks.
    """
    return intrinsic(typer)


def _tile4() -> int:
    """Vectors per pass for four rows: their accumulators must fit the register file.

    Four rows of ``t`` vectors hold 4*t accumulators; a vector of 16 floats is one
    register with AVX-512 (32 of them) but two with AVX2 (16 of them), where t = 2 spills
    and ran 1.3x slower than t = 1. Numba compiles for the host CPU (or the one named by
    NUMBA_CPU_NAME) and keys its cache on it, so asking the host here is consistent.
    """
    if config.CPU_NAME:  # an explicit target (e.g. "generic" for a portable cache): be safe
        return 1
    return 2 if ll.get_host_cpu_features().get("avx512f", False) else 1


tile_matvec = _make(1, TILE, "tile_matvec")
tile_matmat4 = _make(4, _tile4(), "tile_matmat4")


def _panels_codegen(context, builder, signature, args):
    """``panels_matvec``: one row, ``TILE`` panels at a time, each panel one vector wide."""
    src_t, P_t, dst_t = signature.args[0], signature.args[3], signature.args[6]
    a_src, a_s0, a_s1, a_P, a_p0, a_np, a_dst, a_d0, a_d1, a_back = args
    intp = context.get_value_type(types.intp)
    vf = ir.VectorType(ir.FloatType(), LANES)
    lane = ir.Constant(intp, LANES)
    src_a = context.make_array(src_t)(context, builder, a_src)
    dst_a = context.make_array(dst_t)(context, builder, a_dst)
    p_a = context.make_array(P_t)(context, builder, a_P)
    x_ptr = cgutils.get_item_pointer(context, builder, src_t, src_a, [a_s0, a_s1, ir.Constant(intp, 0)])
    nrows = builder.extract_value(p_a.shape, 1)
    panel = builder.mul(nrows, lane)  # elements per panel

    def group(first, width):
        """Accumulate panels first .. first+width-1 over every row."""
        y_base = cgutils.get_item_pointer(context, builder, dst_t, dst_a, [a_d0, a_d1, builder.mul(first, lane)])
        y_vecs = [builder.bitcast(builder.gep(y_base, [ir.Constant(intp, k * LANES)]), vf.as_pointer())
                  for k in range(width)]
        bases = [builder.gep(p_a.data, [builder.mul(builder.add(first, ir.Constant(intp, k)), panel)])
                 for k in range(width)]
        _sum_rows(context, builder, nrows, [x_ptr], [y_vecs],
                  lambda i, k: builder.gep(bases[k], [builder.mul(i, lane)]), P_t.dtype)

    full = ir.Constant(intp, TILE)
    back = builder.icmp_signed("!=", a_back, ir.Constant(a_back.type, 0))
    last = ir.Constant(intp, -1)

    def walk(i, n):
        """The loop's i-th of n, counted from the end when walking backward."""
        return builder.select(back, builder.add(builder.sub(n, i), last), i)

    n_groups = builder.sdiv(a_np, full)
    with cgutils.for_range(builder, n_groups) as loop:
        group(builder.add(a_p0, builder.mul(walk(loop.index, n_groups), full)), TILE)
    rest = builder.add(a_p0, builder.mul(n_groups, full))
    n_rest = builder.sub(a_np, builder.mul(n_groups, full))
    with cgutils.for_range(builder, n_rest) as loop:
        group(builder.add(rest, walk(loop.index, n_rest)), 1)
    return context.get_dummy_value()


@intrinsic
def panels_matvec(typingctx, src, s0, s1, P, p0, npanels, dst, d0, d1, backward):
    """``dst[d0, d1, p*LANES + c] += src[s0, s1, :] @ P[p, :, c]`` for panels p0 .. p0+npanels-1.

    One row against a matrix packed into panels one vector wide (``packing.pack_panels``,
    ``P``: C-contiguous ``(S, n, LANES)`` float32/uint16/int8): ``TILE`` panels walked
    together, so that ``TILE`` vectors of independent sums hide the multiply-add latency
    (a single panel's chain down the rows ran 2x slower for int8 weights). Each sum is the
    same chain of fused multiply-adds as ``tile_matmat4``'s for the same column. No bounds
    checks. ``backward`` (an integer, nonzero: backward) walks the groups of panels last to
    first: each sum is the same, only the order in which the matrix is read changes (see
    ``cpu_kernels._panel_acc``).
    """
    if not (isinstance(src, types.Array) and isinstance(P, types.Array) and isinstance(dst, types.Array)):
        return None
    if src.ndim != 3 or dst.ndim != 3 or P.ndim != 3 or src.dtype != types.float32 or dst.dtype != types.float32:
        return None
    if P.dtype not in (types.float32, types.uint16, types.int8):
        return None
    if not isinstance(backward, types.Integer):
        return None
    return types.none(src, s0, s1, P, p0, npanels, dst, d0, d1, backward), _panels_codegen


@intrinsic
def assume_shape(typingctx, a, shape):
    """``a`` with its shape read as ``shape`` (a tuple of ``a.ndim`` integers): a kernel's hint.

    The same array, when ``shape`` is its shape, as the caller must make sure (no check):
    only the shape the compiled code sees changes, to values LLVM knows at compile time
    where the caller passes constants. A C-contiguous array's indexing is computed from
    its shape, so loops, slices and address arithmetic over it fold to constants
    (``cpu_kernels.UNITS``). Strides and data are kept.
    """
    if not (isinstance(a, types.Array) and isinstance(shape, types.BaseTuple) and len(shape) == a.ndim
            and all(isinstance(t, types.Integer) for t in shape)):
        return None

    def codegen(context, builder, sig, args):
        intp = types.intp
        ary = context.make_array(a)(context, builder, args[0])
        dims = [context.cast(builder, v, t, intp) for v, t in zip(cgutils.unpack_tuple(builder, args[1]), shape)]
        nitems = context.get_constant(intp, 1)
        for dim in dims:
            nitems = builder.mul(nitems, dim)
        ary.shape = cgutils.pack_array(builder, dims)
        ary.nitems = nitems
        return ary._getvalue()

    return a(a, shape), codegen
