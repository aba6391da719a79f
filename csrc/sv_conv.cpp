// CPU kernels of the space-varying convolution (see sv_conv.h).
//
// The tent weight of grid node (gy, gx) at output pixel (i, j) is separable, wy_gy(i) * wx_gx(j). The interpolation
// along y is therefore folded into the kernels once per output row (k_{i,gx} = sum_gy wy_gy(i) h_{gy,gx}), and each
// output pixel needs only the two kernels of its column cell: 2*kh*kw multiply-adds instead of the 4*kh*kw of the
// four-kernel product-convolution sum (8*kh*kw "useful" flops), and instead of Gy*Gx*kh*kw for a dense sum.
//
// Work is split into bands of rows; each band copies the padded input rows it reads into a thread-local buffer, so
// the inner loops never test a boundary: extra memory is O(threads * band * row), not O(image).
#include "sv_conv.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "simd.h"

namespace blindfast {
namespace {

// Output rows per work unit: enough units to balance 2+ threads on one RGB image, while the (kh - 1) halo rows a
// band copies again stay below 2x its own rows for k <= 31. Not tuned beyond that.
constexpr int64_t kBandRows = 32;
// Zeroed elements after each buffered row, so vector strips may read past the row end.
constexpr int64_t kSlack = 64;
// Below this many multiply-adds a call runs on one thread: forking a team costs more than it saves.
constexpr int64_t kParallelWork = int64_t(1) << 18;
// Chunks of consecutive work units per thread in the psf gradient. Each chunk sums into its own partial, and the
// partials are added in chunk order: the chunks depend only on the unit count and the thread count, not on which
// thread runs which, so the gradient is the same on every run with a given thread count. Several chunks per thread
// keep the dynamic schedule's balancing when another process takes a core; 1, 4 and 8 per thread timed within 2% of
// each other (1024^2 RGB, 8x8 grid, k31, 2 threads on a loaded machine: 564 / 568 / 572 ms), one per unit no faster.
constexpr int64_t kChunksPerThread = 4;
// Vectors per strip in the forward / adjoint inner loops: 4 x 2 accumulators + loads fit the 16 AVX2 registers.
constexpr int kStripVectors = 4;

int64_t work(const SvConvShape& s) { return s.B * s.C * s.H * s.W * s.kh * s.kw; }

struct Geometry {
  int64_t Ho, Wo;    // output size
  int64_t top, left; // leading padding
  int64_t Hp, Wp;    // padded input size: Ho + kh - 1, Wo + kw - 1
};

Geometry make_geometry(const SvConvShape& s) {
  Geometry g;
  if (s.padding == Padding::Valid) {
    g.Ho = s.H - s.kh + 1;
    g.Wo = s.W - s.kw + 1;
    g.top = g.left = 0;
  } else {
    g.Ho = s.H;
    g.Wo = s.W;
    g.top = (s.kh - 1) / 2;
    g.left = (s.kw - 1) / 2;
  }
  g.Hp = g.Ho + s.kh - 1;
  g.Wp = g.Wo + s.kw - 1;
  return g;
}

// Tent interpolation along one axis of n output pixels with G nodes on the end pixels (align_corners).
template <typename T>
struct Interp1D {
  int64_t cells;               // G - 1 (1 when G == 1)
  std::vector<int64_t> start;  // [cells + 1]: first pixel of each cell, start[cells] = n
  std::vector<int64_t> cell;   // [n]
  std::vector<T> frac;         // [n + kSlack]: weight of the cell's upper node (0 when G == 1)

  Interp1D(int64_t n, int64_t G) : cells(G > 1 ? G - 1 : 1), start(cells + 1, n), cell(n), frac(n + kSlack, T(0)) {
    const double step = G > 1 ? double(G - 1) / double(std::max<int64_t>(n - 1, 1)) : 0.0;
    for (int64_t i = n - 1; i >= 0; --i) {
      const double u = double(i) * step;
      const int64_t c = G > 1 ? std::min<int64_t>(int64_t(std::floor(u)), G - 2) : 0;
      cell[i] = c;
      frac[i] = T(u - double(c));
      start[c] = i;
    }
    for (int64_t c = cells - 1; c >= 0; --c) start[c] = std::min(start[c], start[c + 1]);
  }
  // Pixels where node g has a non-zero weight: the cells on either side of it.
  int64_t support_lo(int64_t g) const { return start[std::max<int64_t>(g - 1, 0)]; }
  int64_t support_hi(int64_t g) const { return start[std::min<int64_t>(g + 1, cells)]; }
  // Weight of node g at pixel j (j inside its support).
  T weight(int64_t g, int64_t j, int64_t G) const {
    if (G == 1) return T(1);
    return cell[j] == g ? T(1) - frac[j] : frac[j];
  }
};

// Column source indices of the padded row: colmap[q] = column of x read at padded column q, or -1 for zero.
std::vector<int64_t> make_colmap(const SvConvShape& s, const Geometry& g) {
  std::vector<int64_t> colmap(g.Wp);
  for (int64_t q = 0; q < g.Wp; ++q) colmap[q] = pad_source(q - g.left, s.W, s.padding);
  return colmap;
}

int64_t row_source(int64_t p, const SvConvShape& s, const Geometry& g) {
  return pad_source(p - g.top, s.H, s.padding);
}

// dst[0, Wp) = padded row p of the plane; dst's slack stays zero.
template <typename T>
void load_padded_row(const T* plane, int64_t p, const SvConvShape& s, const Geometry& g,
                     const std::vector<int64_t>& colmap, T* dst) {
  const int64_t r = row_source(p, s, g);
  if (r < 0) {
    std::fill(dst, dst + g.Wp, T(0));
    return;
  }
  const T* src = plane + r * s.W;
  for (int64_t q = 0; q < g.left; ++q) dst[q] = colmap[q] >= 0 ? src[colmap[q]] : T(0);
  std::memcpy(dst + g.left, src, sizeof(T) * s.W);
  for (int64_t q = g.left + s.W; q < g.Wp; ++q) dst[q] = colmap[q] >= 0 ? src[colmap[q]] : T(0);
}

// Flipped, y-interpolated kernels of one output row for every column node:
// kf[gx][a][e] = sum_gy wy_gy(i) h_{gy,gx}[kh-1-a][kw-1-e]  (kf: [Gx, kh, kw], psf: [Gy, Gx, kh, kw]).
template <typename T>
void row_kernels(const T* psf, const Interp1D<T>& iy, int64_t i, const SvConvShape& s, T* kf) {
  const int64_t ksz = s.kh * s.kw;
  const int64_t gy0 = iy.cell[i];
  const T ty = iy.frac[i];
  const T* h0 = psf + gy0 * s.Gx * ksz;
  const T* h1 = s.Gy > 1 ? h0 + s.Gx * ksz : h0;
  for (int64_t gx = 0; gx < s.Gx; ++gx)
    for (int64_t k = 0; k < ksz; ++k) {
      const int64_t src = gx * ksz + (ksz - 1 - k);
      kf[gx * ksz + k] = (T(1) - ty) * h0[src] + ty * h1[src];
    }
}

// Row a of the flipped kernels of output row i for every column node: dst[gx * dst_stride + e] = kf_{i,gx}[a][e].
template <typename T>
void kernel_row(const T* psf, const Interp1D<T>& iy, int64_t i, int64_t a, const SvConvShape& s, T* dst,
                int64_t dst_stride) {
  const int64_t ksz = s.kh * s.kw;
  const T ty = iy.frac[i];
  const T* h0 = psf + iy.cell[i] * s.Gx * ksz;
  const T* h1 = s.Gy > 1 ? h0 + s.Gx * ksz : h0;
  for (int64_t gx = 0; gx < s.Gx; ++gx)
    for (int64_t e = 0; e < s.kw; ++e) {
      const int64_t src = gx * ksz + (ksz - 1 - (a * s.kw + e));
      dst[gx * dst_stride + e] = (T(1) - ty) * h0[src] + ty * h1[src];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward

// Correlates NV vectors of output pixels with one kernel (or two, PAIR) over a window of kh buffered rows.
template <typename T, bool PAIR, int NV>
inline void correlate_strip(const T* rows, int64_t stride, const T* k0, const T* k1, int64_t kh, int64_t kw,
                            typename Simd<T>::vec* acc0, typename Simd<T>::vec* acc1) {
  using S = Simd<T>;
  using V = typename S::vec;
  for (int v = 0; v < NV; ++v) acc0[v] = acc1[v] = V{};
  for (int64_t a = 0; a < kh; ++a) {
    const T* r = rows + a * stride;
    for (int64_t e = 0; e < kw; ++e) {
      const V w0 = S::broadcast(k0[a * kw + e]);
      const V w1 = S::broadcast(PAIR ? k1[a * kw + e] : T(0));
      for (int v = 0; v < NV; ++v) {
        const V xv = S::pin(S::load(r + e + v * S::width));
        acc0[v] += w0 * xv;
        if (PAIR) acc1[v] += w1 * xv;
      }
    }
  }
}

// One output row segment [j0, j1) inside one column cell: y = (1 - t) k0*x + t k1*x.
template <typename T, bool PAIR>
void forward_cell(const T* rows, int64_t stride, const T* k0, const T* k1, const T* frac, int64_t j0, int64_t j1,
                  int64_t kh, int64_t kw, T* out) {
  using S = Simd<T>;
  using V = typename S::vec;
  constexpr int W = S::width;
  V acc0[kStripVectors], acc1[kStripVectors];
  int64_t j = j0;
  for (; j + kStripVectors * W <= j1; j += kStripVectors * W) {
    correlate_strip<T, PAIR, kStripVectors>(rows + j, stride, k0, k1, kh, kw, acc0, acc1);
    for (int v = 0; v < kStripVectors; ++v) {
      const V t = S::load(frac + j + v * W);
      S::store(out + j + v * W, PAIR ? acc0[v] + t * (acc1[v] - acc0[v]) : acc0[v]);
    }
  }
  for (; j < j1; j += W) {
    correlate_strip<T, PAIR, 1>(rows + j, stride, k0, k1, kh, kw, acc0, acc1);
    const V t = S::load(frac + j);
    const V r = PAIR ? acc0[0] + t * (acc1[0] - acc0[0]) : acc0[0];
    const int64_t n = std::min<int64_t>(W, j1 - j);
    for (int64_t l = 0; l < n; ++l) out[j + l] = r[l];
  }
}

}  // namespace

template <typename T>
void sv_conv_forward_cpu(const T* x, const T* psf, T* y, const SvConvShape& s) {
  const Geometry g = make_geometry(s);
  const Interp1D<T> iy(g.Ho, s.Gy), ix(g.Wo, s.Gx);
  const std::vector<int64_t> colmap = make_colmap(s, g);
  const int64_t ksz = s.kh * s.kw, stride = g.Wp + kSlack;
  const int64_t bands = (g.Ho + kBandRows - 1) / kBandRows, planes = s.B * s.C;
  const bool pair = s.Gx > 1;

#pragma omp parallel if (work(s) > kParallelWork)
  {
    std::vector<T> band((kBandRows + s.kh - 1) * stride, T(0));
    std::vector<T> kf(s.Gx * ksz);
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < planes * bands; ++unit) {
      const int64_t plane = unit / bands, b = plane / s.C, c = plane % s.C;
      const int64_t i0 = (unit % bands) * kBandRows, i1 = std::min(i0 + kBandRows, g.Ho);
      const T* xplane = x + plane * s.H * s.W;
      const T* grid = psf + ((s.Bg > 1 ? b : 0) * s.Cg + (s.Cg > 1 ? c : 0)) * s.Gy * s.Gx * ksz;
      for (int64_t p = i0; p < i1 + s.kh - 1; ++p)
        load_padded_row(xplane, p, s, g, colmap, band.data() + (p - i0) * stride);
      for (int64_t i = i0; i < i1; ++i) {
        row_kernels(grid, iy, i, s, kf.data());
        const T* rows = band.data() + (i - i0) * stride;
        T* out = y + (plane * g.Ho + i) * g.Wo;
        for (int64_t cx = 0; cx < ix.cells; ++cx) {
          const T* k0 = kf.data() + cx * ksz;
          if (pair)
            forward_cell<T, true>(rows, stride, k0, k0 + ksz, ix.frac.data(), ix.start[cx], ix.start[cx + 1], s.kh,
                                  s.kw, out);
          else
            forward_cell<T, false>(rows, stride, k0, k0, ix.frac.data(), ix.start[cx], ix.start[cx + 1], s.kh, s.kw,
                                   out);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Node-weighted output rows shared by the adjoint and the psf gradient: for column node gx, the row y[i] times the
// node's tent weight, stored over its support [lo, hi) with `before` zeros ahead and `after` zeros behind.

namespace {

template <typename T>
struct NodeRows {
  int64_t before, row_len;
  std::vector<int64_t> lo, hi, offset;  // [Gx] support and start of each node's segment within a row

  NodeRows(const Interp1D<T>& ix, int64_t Gx, int64_t before_, int64_t after) : before(before_), row_len(0) {
    for (int64_t gx = 0; gx < Gx; ++gx) {
      lo.push_back(ix.support_lo(gx));
      hi.push_back(ix.support_hi(gx));
      offset.push_back(row_len);
      row_len += before + (hi.back() - lo.back()) + after;
    }
  }
  // Pointer to the value at column lo[gx] of node gx inside a buffered row.
  T* at(T* row, int64_t gx) const { return row + offset[gx] + before; }
  const T* at(const T* row, int64_t gx) const { return row + offset[gx] + before; }

  // Writes the node-weighted copies of yrow (length Wo) into row (length row_len, padding zeros untouched).
  void fill(const T* yrow, const Interp1D<T>& ix, int64_t Gx, T* row) const {
    for (int64_t gx = 0; gx < Gx; ++gx) {
      T* seg = at(row, gx);
      for (int64_t j = lo[gx]; j < hi[gx]; ++j) seg[j - lo[gx]] = ix.weight(gx, j, Gx) * yrow[j];
    }
  }
};

// Adds the result of a padded-coordinates adjoint row (acc, length Wp) to x's row r, folding the padded columns.
template <typename T>
void fold_row(const T* acc, const SvConvShape& s, const Geometry& g, const std::vector<int64_t>& colmap, T* xrow,
              bool overwrite) {
  if (overwrite)
    std::memcpy(xrow, acc + g.left, sizeof(T) * s.W);
  else
    for (int64_t j = 0; j < s.W; ++j) xrow[j] += acc[g.left + j];
  for (int64_t q = 0; q < g.left; ++q)
    if (colmap[q] >= 0) xrow[colmap[q]] += acc[q];
  for (int64_t q = g.left + s.W; q < g.Wp; ++q)
    if (colmap[q] >= 0) xrow[colmap[q]] += acc[q];
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Adjoint, gathered per padded input row p:
//   xp[p][q] = sum_a sum_gx sum_e kf_{p-a,gx}[a][e] * G_{p-a,gx}[q-e],   G_{i,gx} = wx_gx * y[i]
// then folded back onto x (pad^T). Rows of x that padded rows fold onto are added after the parallel part.

template <typename T>
void sv_conv_adjoint_cpu(const T* y, const T* psf, T* x, const SvConvShape& s) {
  using S = Simd<T>;
  using V = typename S::vec;
  constexpr int W = S::width;
  constexpr int64_t strip = kStripVectors * W;
  const Geometry g = make_geometry(s);
  const Interp1D<T> iy(g.Ho, s.Gy), ix(g.Wo, s.Gx);
  const std::vector<int64_t> colmap = make_colmap(s, g);
  const NodeRows<T> nodes(ix, s.Gx, s.kw - 1, s.kw - 1 + strip);
  const int64_t ksz = s.kh * s.kw, acc_len = g.Wp + strip;
  const int64_t bands = (g.Hp + kBandRows - 1) / kBandRows, planes = s.B * s.C;
  // Padded rows outside [top, top + H) fold onto rows of x that other bands write: keep them for afterwards.
  const int64_t n_pad_rows = g.Hp - (s.padding == Padding::Valid ? g.Hp : s.H);
  std::vector<T> pad_rows(planes * std::max<int64_t>(n_pad_rows, 0) * g.Wp, T(0));

#pragma omp parallel if (work(s) > kParallelWork)
  {
    std::vector<T> weighted((kBandRows + s.kh - 1) * nodes.row_len, T(0));
    std::vector<T> kadj(s.Gx * ksz), acc(acc_len);
#pragma omp for schedule(dynamic, 1)
    for (int64_t unit = 0; unit < planes * bands; ++unit) {
      const int64_t plane = unit / bands, b = plane / s.C, c = plane % s.C;
      const int64_t p0 = (unit % bands) * kBandRows, p1 = std::min(p0 + kBandRows, g.Hp);
      const T* grid = psf + ((s.Bg > 1 ? b : 0) * s.Cg + (s.Cg > 1 ? c : 0)) * s.Gy * s.Gx * ksz;
      // Output rows read by this band: [i_begin, i_end).
      const int64_t i_begin = std::max<int64_t>(p0 - s.kh + 1, 0), i_end = std::min(p1, g.Ho);
      for (int64_t i = i_begin; i < i_end; ++i)
        nodes.fill(y + (plane * g.Ho + i) * g.Wo, ix, s.Gx, weighted.data() + (i - i_begin) * nodes.row_len);

      for (int64_t p = p0; p < p1; ++p) {
        std::fill(acc.begin(), acc.end(), T(0));
        const int64_t a_lo = std::max<int64_t>(0, p - g.Ho + 1), a_hi = std::min<int64_t>(s.kh, p + 1);
        // kadj[gx][a][e] = kf_{p-a,gx}[a][e]: only the kernel rows that reach padded row p.
        for (int64_t a = a_lo; a < a_hi; ++a) kernel_row(grid, iy, p - a, a, s, kadj.data() + a * s.kw, ksz);
        for (int64_t gx = 0; gx < s.Gx; ++gx) {
          for (int64_t q0 = nodes.lo[gx]; q0 < nodes.hi[gx] + s.kw - 1; q0 += strip) {
            V sum[kStripVectors] = {};
            for (int64_t a = a_lo; a < a_hi; ++a) {
              const T* grow = nodes.at(weighted.data() + (p - a - i_begin) * nodes.row_len, gx) - nodes.lo[gx] + q0;
              const T* krow = kadj.data() + gx * ksz + a * s.kw;
              for (int64_t e = 0; e < s.kw; ++e) {
                const V w = S::broadcast(krow[e]);
                for (int v = 0; v < kStripVectors; ++v) sum[v] += w * S::load(grow - e + v * W);
              }
            }
            for (int v = 0; v < kStripVectors; ++v)
              S::store(acc.data() + q0 + v * W, S::load(acc.data() + q0 + v * W) + sum[v]);
          }
        }
        if (s.padding == Padding::Valid) {
          std::memcpy(x + (plane * s.H + p) * s.W, acc.data(), sizeof(T) * s.W);
        } else if (p >= g.top && p < g.top + s.H) {
          fold_row(acc.data(), s, g, colmap, x + (plane * s.H + p - g.top) * s.W, true);
        } else if (s.padding != Padding::Zeros) {
          const int64_t slot = p < g.top ? p : p - s.H;
          std::memcpy(pad_rows.data() + (plane * n_pad_rows + slot) * g.Wp, acc.data(), sizeof(T) * g.Wp);
        }
      }
    }
  }
  if (s.padding == Padding::Valid || s.padding == Padding::Zeros) return;
  for (int64_t plane = 0; plane < planes; ++plane)
    for (int64_t slot = 0; slot < n_pad_rows; ++slot) {
      const int64_t p = slot < g.top ? slot : slot + s.H;
      const int64_t r = row_source(p, s, g);
      fold_row(pad_rows.data() + (plane * n_pad_rows + slot) * g.Wp, s, g, colmap, x + (plane * s.H + r) * s.W,
               false);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// psf gradient: d/dh_{gy,gx}[a][e] of <y, grad_y> = sum_i wy_gy(i) sum_j G_{i,gx}[j] xp[i + kh-1-a][j + kw-1-e],
// with G_{i,gx} = wx_gx * grad_y[i]. Per row and column node: kh*kw dot products over the node's support, kept as
// vectors of partial sums (reduced across lanes once at the end), then split between the row's two y-nodes.

namespace {

// dot[k] = lane-wise partial sums of sum_j g[j] * xrow[j + k] for k < NB, over j in [0, len) (g zero-padded).
template <typename T, int NB>
inline void dot_block(const T* g, const T* xrow, int64_t len, typename Simd<T>::vec* dot) {
  using S = Simd<T>;
  for (int k = 0; k < NB; ++k) dot[k] = typename S::vec{};
  for (int64_t j = 0; j < len; j += S::width) {
    const typename S::vec gv = S::load(g + j);
    for (int k = 0; k < NB; ++k) dot[k] += gv * S::load(xrow + j + k);
  }
}

template <typename T>
void dot_block_dispatch(int nb, const T* g, const T* xrow, int64_t len, typename Simd<T>::vec* dot) {
  switch (nb) {
    case 1: return dot_block<T, 1>(g, xrow, len, dot);
    case 2: return dot_block<T, 2>(g, xrow, len, dot);
    case 3: return dot_block<T, 3>(g, xrow, len, dot);
    case 4: return dot_block<T, 4>(g, xrow, len, dot);
    case 5: return dot_block<T, 5>(g, xrow, len, dot);
    case 6: return dot_block<T, 6>(g, xrow, len, dot);
    case 7: return dot_block<T, 7>(g, xrow, len, dot);
    default: return dot_block<T, 8>(g, xrow, len, dot);
  }
}

}  // namespace

template <typename T>
void sv_conv_grad_psf_cpu(const T* x, const T* grad_y, T* grad_psf, const SvConvShape& s) {
  using S = Simd<T>;
  using V = typename S::vec;
  constexpr int W = S::width;
  constexpr int kBlock = 8;  // kernel columns per pass: 8 accumulators + the G vector + a load
  const Geometry g = make_geometry(s);
  const Interp1D<T> iy(g.Ho, s.Gy), ix(g.Wo, s.Gx);
  const std::vector<int64_t> colmap = make_colmap(s, g);
  const NodeRows<T> nodes(ix, s.Gx, 0, W);
  const int64_t ksz = s.kh * s.kw, stride = g.Wp + kSlack, grid_len = s.Gy * s.Gx * ksz;
  const int64_t bands = (g.Ho + kBandRows - 1) / kBandRows;
  const int64_t max_chunks = kChunksPerThread * omp_get_max_threads();

  // One psf grid at a time, so the chunk partials hold a single grid.
  for (int64_t grid_index = 0; grid_index < s.Bg * s.Cg; ++grid_index) {
    const int64_t bg = grid_index / s.Cg, cg = grid_index % s.Cg;
    std::vector<int64_t> planes;
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t c = 0; c < s.C; ++c)
        if ((s.Bg == 1 || b == bg) && (s.Cg == 1 || c == cg)) planes.push_back(b * s.C + c);
    const int64_t n_units = int64_t(planes.size()) * bands;
    const int64_t n_chunks = std::min(n_units, max_chunks);
    // chunk_sums[chunk][n * ksz + k]: the chunk's sum for tap k of node n, in flipped kernel coordinates, written
    // for the node rows [chunk_rows[2 chunk], chunk_rows[2 chunk + 1]) that the chunk's output rows reach.
    std::vector<T> chunk_sums(n_chunks * grid_len);
    std::vector<int64_t> chunk_rows(2 * n_chunks);
    T* out = grad_psf + grid_index * grid_len;

#pragma omp parallel if (work(s) > kParallelWork)
    {
      std::vector<T> band((kBandRows + s.kh - 1) * stride, T(0));
      std::vector<T> weighted(nodes.row_len, T(0));
      std::vector<V> partial(grid_len);
#pragma omp for schedule(dynamic, 1)
      for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
        const int64_t first = chunk * n_units / n_chunks, last = (chunk + 1) * n_units / n_chunks;
        // Only the node rows [gy_lo, gy_hi) that the chunk reaches are cleared and summed: the whole grid's partials
        // are MBs of vectors for 31 x 31 kernels on an 8 x 8 grid.
        int64_t gy_lo = s.Gy, gy_hi = 0;
        for (int64_t unit = first; unit < last; ++unit) {
          const int64_t i0 = (unit % bands) * kBandRows, i1 = std::min(i0 + kBandRows, g.Ho);
          gy_lo = std::min(gy_lo, iy.cell[i0]);
          gy_hi = std::max(gy_hi, std::min(iy.cell[i1 - 1] + 2, s.Gy));
        }
        std::fill(partial.begin() + gy_lo * s.Gx * ksz, partial.begin() + gy_hi * s.Gx * ksz, V{});
        for (int64_t unit = first; unit < last; ++unit) {
          const int64_t plane = planes[unit / bands];
          const int64_t i0 = (unit % bands) * kBandRows, i1 = std::min(i0 + kBandRows, g.Ho);
          for (int64_t p = i0; p < i1 + s.kh - 1; ++p)
            load_padded_row(x + plane * s.H * s.W, p, s, g, colmap, band.data() + (p - i0) * stride);
          for (int64_t i = i0; i < i1; ++i) {
            nodes.fill(grad_y + (plane * g.Ho + i) * g.Wo, ix, s.Gx, weighted.data());
            const int64_t gy0 = iy.cell[i];
            const V w_lo = S::broadcast(T(1) - iy.frac[i]), w_hi = S::broadcast(iy.frac[i]);
            for (int64_t gx = 0; gx < s.Gx; ++gx) {
              const T* gseg = nodes.at(weighted.data(), gx);
              const int64_t lo = nodes.lo[gx], len = nodes.hi[gx] - lo;
              V* lo_node = partial.data() + (gy0 * s.Gx + gx) * ksz;
              V* hi_node = s.Gy > 1 ? lo_node + s.Gx * ksz : nullptr;
              for (int64_t a = 0; a < s.kh; ++a) {
                const T* xrow = band.data() + (i - i0 + a) * stride + lo;
                for (int64_t e0 = 0; e0 < s.kw; e0 += kBlock) {
                  const int nb = int(std::min<int64_t>(kBlock, s.kw - e0));
                  V dot[kBlock];
                  dot_block_dispatch<T>(nb, gseg, xrow + e0, len, dot);
                  for (int k = 0; k < nb; ++k) {
                    lo_node[a * s.kw + e0 + k] += w_lo * dot[k];
                    if (hi_node) hi_node[a * s.kw + e0 + k] += w_hi * dot[k];
                  }
                }
              }
            }
          }
        }
        T* sums = chunk_sums.data() + chunk * grid_len;
        for (int64_t k = gy_lo * s.Gx * ksz; k < gy_hi * s.Gx * ksz; ++k) sums[k] = S::sum(partial[k]);
        chunk_rows[2 * chunk] = gy_lo;
        chunk_rows[2 * chunk + 1] = gy_hi;
      }
      // Each node's taps: the chunks' sums in chunk order, whichever thread made them (chunk-major, so the reads run
      // along memory). Partial sums are in flipped kernel coordinates: (a, e) -> (kh-1-a, kw-1-e).
      std::vector<T> total(ksz);
#pragma omp for schedule(static)
      for (int64_t n = 0; n < s.Gy * s.Gx; ++n) {
        std::fill(total.begin(), total.end(), T(0));
        const int64_t gy = n / s.Gx;
        for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
          if (gy < chunk_rows[2 * chunk] || gy >= chunk_rows[2 * chunk + 1]) continue;
          const T* sums = chunk_sums.data() + chunk * grid_len + n * ksz;
          for (int64_t k = 0; k < ksz; ++k) total[k] += sums[k];
        }
        for (int64_t k = 0; k < ksz; ++k) out[n * ksz + (ksz - 1 - k)] = total[k];
      }
    }
  }
}

template void sv_conv_forward_cpu<float>(const float*, const float*, float*, const SvConvShape&);
template void sv_conv_forward_cpu<double>(const double*, const double*, double*, const SvConvShape&);
template void sv_conv_adjoint_cpu<float>(const float*, const float*, float*, const SvConvShape&);
template void sv_conv_adjoint_cpu<double>(const double*, const double*, double*, const SvConvShape&);
template void sv_conv_grad_psf_cpu<float>(const float*, const float*, float*, const SvConvShape&);
template void sv_conv_grad_psf_cpu<double>(const double*, const double*, double*, const SvConvShape&);

}  // namespace blindfast
