// Fused CPU kernels for FreeCG's per-edge vector work and its group CG transform, forward
// and backward (for the inputs; the weights are frozen).
//
// The per-edge tensors of a layer are (E, 8, F): a neighbour's vector features v_j seen along
// an edge, the edge update's projections, the vector message. Built with torch operations,
// each is written to memory and read back several times, forward and backward, and that
// traffic (not arithmetic) is what a FreeCG layer costs on a CPU. These kernels read the
// neighbours' rows where they lie, (U, 8, F) for the U distinct neighbours of a run of
// edges, and keep each edge's 8 x F values in registers and L1, so no (E, 8, F) tensor exists.
//
// Layout and conventions (one dtype: float32 or float64; all tensors contiguous, except
// that the (E, 2F) inputs dkdv and gates, and the edge update's (E, F) pre-activations
// and their gradients, may be blocks of columns of a wider tensor: rows strided, each
// row contiguous):
//   y         (E, 8)     spherical harmonics of each edge (1o + 2e), not necessarily unit
//   centers   (E,)       int64, the edge's centre as a row of the run's centre tensors
//   neighbors (E,)       int64, the edge's neighbour as a row of the neighbour tensors
//   v         (U, 8, F)  neighbours' vector features
//   wc        (C, 8, F)  centres' edge-update projection W_c v_i (may be empty: no edge update)
//   wn        (U, 8, F)  neighbours' edge-update projection W_n v_j (empty alike)
// The edge kernels run in the calling thread: the layer already shares runs of edges among
// threads, so the bindings release the GIL. The group transform splits its groups over
// torch's intra-op threads, which in the layer's pool threads is one.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t M = 8;  // components of 1o + 2e

// One 64-byte vector of T (GCC/Clang vector extension, so that sums stay in registers): L
// channels of an edge in the edge kernels, the L atoms of a block in the group transform.
template <typename T>
struct Lanes {
  typedef T vec __attribute__((vector_size(64)));
  static constexpr int n = 64 / sizeof(T);
};

template <typename T>
inline typename Lanes<T>::vec load_vec(const T* p) {
  typename Lanes<T>::vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store_vec(T* p, typename Lanes<T>::vec v) {
  std::memcpy(p, &v, sizeof(v));
}

// The edge kernels' bodies are written once for a vector of channels (Lanes<T>::vec) and
// for the scalar channels left over when F is not a multiple of the vector width.
template <typename W, typename T>
inline W load_as(const T* p) {
  if constexpr (std::is_same_v<W, T>) {
    return *p;
  } else {
    return load_vec(p);
  }
}

template <typename T>
inline void store_as(T* p, T x) {
  *p = x;
}

template <typename T>
inline void store_as(T* p, typename Lanes<T>::vec x) {
  store_vec(p, x);
}

template <typename T>
inline T lane_sum(T x) {
  return x;
}

template <typename T, typename V>
inline T lane_sum(V x) {
  T total = 0;
  for (int l = 0; l < Lanes<T>::n; ++l) total += x[l];
  return total;
}

// SiLU of the row x + bias (n,; bias null: none) into act, and its sigma into sig unless
// that is null; and the backward from those two: grad *= silu'(x) = sigma (1 + x (1 -
// sigma)), in place. The message and aggregation kernels can take their SiLUs' inputs
// (pre-activations) and apply them to an edge's row in L1, so neither the activations nor
// their gradients go through memory, and one pass each way replaces torch's separate ones.
template <typename T>
void silu_row(const T* x, const T* bias, T* act, T* sig, int64_t n);

template <typename T>
void silu_row_backward(const T* act, const T* sig, T* grad, int64_t n);

// Forward of the edge invariants:
//   dot[e, f] = sum_m v[j, m, f] y[e, m]                                (attention enhancer)
//   rej[e, f] = sum_m a_m b_m - (sum_m a_m y_m)(sum_m b_m y_m) / |y|^2   (edge update)
// with a = wc[i, :, f], b = wn[j, :, f]: the dot product of a and b after removing from each
// its component along y.
// One vector (W = Lanes<T>::vec) or one scalar (W = T) of channels f of an edge, with
// ym = y[e, m], inv = 1 / |y|^2: every sum over m stays in registers.
template <typename T, typename W>
inline void invariants_forward_channels(const T* vj, const T* a, const T* b, const T* ye,
                                        T inv, int64_t F, int64_t f, T* dot, T* rej) {
  W out{};
  for (int64_t m = 0; m < M; ++m) out += ye[m] * load_as<W>(vj + m * F + f);
  store_as(dot + f, out);
  if (rej == nullptr) return;
  W ab{}, ay{}, by{};
  for (int64_t m = 0; m < M; ++m) {
    const W am = load_as<W>(a + m * F + f), bm = load_as<W>(b + m * F + f);
    ab += am * bm;
    ay += ye[m] * am;
    by += ye[m] * bm;
  }
  store_as(rej + f, ab - ay * by * inv);
}

template <typename T>
void invariants_forward_kernel(const T* __restrict v, const T* __restrict wc,
                               const T* __restrict wn, const T* __restrict y,
                               const int64_t* __restrict centers,
                               const int64_t* __restrict neighbors, T* __restrict dot,
                               T* __restrict rej, int64_t n_edges, int64_t F, bool edge_update) {
  using V = typename Lanes<T>::vec;
  constexpr int L = Lanes<T>::n;
  for (int64_t e = 0; e < n_edges; ++e) {
    const T* ye = y + e * M;
    T norm2 = 0;
    for (int64_t m = 0; m < M; ++m) norm2 += ye[m] * ye[m];
    const T inv = T(1) / norm2;
    const T* vj = v + neighbors[e] * M * F;
    const T* a = edge_update ? wc + centers[e] * M * F : nullptr;
    const T* b = edge_update ? wn + neighbors[e] * M * F : nullptr;
    T* out = dot + e * F;
    T* r = edge_update ? rej + e * F : nullptr;
    int64_t f = 0;
    for (; f + L <= F; f += L) invariants_forward_channels<T, V>(vj, a, b, ye, inv, F, f, out, r);
    for (; f < F; ++f) invariants_forward_channels<T, T>(vj, a, b, ye, inv, F, f, out, r);
  }
}

// Backward of invariants_forward_kernel for channels f of an edge, W as above. Adds into the
// rows gvj (neighbour's v), ga, gb (centre's wc, neighbour's wn) and into acc[m] and both,
// whose sums over channels give grad_y:
//   d rej / d a_m = b_m - y_m (b.y) / |y|^2, alike for b;
//   d rej / d y_m = -(a_m (b.y) + b_m (a.y)) / |y|^2 + 2 y_m (a.y)(b.y) / |y|^4.
template <typename T, typename W>
inline void invariants_backward_channels(const T* vj, const T* a, const T* b, const T* ye,
                                         T inv, int64_t F, int64_t f, const T* gd,
                                         const T* gr, T* gvj, T* ga, T* gb, W* acc, W& both) {
  const W g = load_as<W>(gd + f);
  for (int64_t m = 0; m < M; ++m) {
    acc[m] += load_as<W>(vj + m * F + f) * g;
    store_as(gvj + m * F + f, load_as<W>(gvj + m * F + f) + ye[m] * g);
  }
  if (gr == nullptr) return;
  W ay{}, by{};
  for (int64_t m = 0; m < M; ++m) {
    ay += ye[m] * load_as<W>(a + m * F + f);
    by += ye[m] * load_as<W>(b + m * F + f);
  }
  const W r = load_as<W>(gr + f);
  const W p = r * by * inv, q = r * ay * inv;
  both += p * ay;
  for (int64_t m = 0; m < M; ++m) {
    const W am = load_as<W>(a + m * F + f), bm = load_as<W>(b + m * F + f);
    store_as(ga + m * F + f, load_as<W>(ga + m * F + f) + r * bm - ye[m] * p);
    store_as(gb + m * F + f, load_as<W>(gb + m * F + f) + r * am - ye[m] * q);
    acc[m] -= am * p + bm * q;
  }
}

// Backward of invariants_forward_kernel. grad_v, grad_wc, grad_wn, grad_y are accumulated
// into (the caller zeroes them); grad_rej is null without edge update.
template <typename T>
void invariants_backward_kernel(const T* __restrict v, const T* __restrict wc,
                                const T* __restrict wn, const T* __restrict y,
                                const int64_t* __restrict centers,
                                const int64_t* __restrict neighbors,
                                const T* __restrict grad_dot, const T* __restrict grad_rej,
                                T* __restrict grad_v, T* __restrict grad_wc,
                                T* __restrict grad_wn, T* __restrict grad_y,
                                const int64_t* __restrict order, int64_t n_edges, int64_t F) {
  using V = typename Lanes<T>::vec;
  constexpr int L = Lanes<T>::n;
  const bool edge_update = grad_rej != nullptr;
  for (int64_t n = 0; n < n_edges; ++n) {
    const int64_t e = order[n];
    const T* ye = y + e * M;
    T norm2 = 0;
    for (int64_t m = 0; m < M; ++m) norm2 += ye[m] * ye[m];
    const T inv = T(1) / norm2;
    const int64_t i = centers[e], j = neighbors[e];
    const T* a = edge_update ? wc + i * M * F : nullptr;
    const T* b = edge_update ? wn + j * M * F : nullptr;
    T* ga = edge_update ? grad_wc + i * M * F : nullptr;
    T* gb = edge_update ? grad_wn + j * M * F : nullptr;
    const T* gr = edge_update ? grad_rej + e * F : nullptr;
    V acc[M] = {}, both{};
    T acc_tail[M] = {}, both_tail = 0;
    int64_t f = 0;
    for (; f + L <= F; f += L)
      invariants_backward_channels<T, V>(v + j * M * F, a, b, ye, inv, F, f, grad_dot + e * F,
                                         gr, grad_v + j * M * F, ga, gb, acc, both);
    for (; f < F; ++f)
      invariants_backward_channels<T, T>(v + j * M * F, a, b, ye, inv, F, f, grad_dot + e * F,
                                         gr, grad_v + j * M * F, ga, gb, acc_tail, both_tail);
    const T both_sum = lane_sum<T>(both) + both_tail;
    T* gy = grad_y + e * M;
    for (int64_t m = 0; m < M; ++m) {
      gy[m] += lane_sum<T>(acc[m]) + acc_tail[m];
      if (edge_update) gy[m] += T(2) * ye[m] * both_sum * inv;
    }
  }
}

// Forward of the attention messages of a run's edges (no softmax), with
// dk = dkdv[e, :F], dv = dkdv[e, F:] (through SiLU, after adding bias: here unless
// Activated, when bias is null), heads of
// D = F / H channels:
//   z[e, h] = enhance[e, h] + sum_d q[i, h, d] k[j, h, d] dk[e, h, d]
//   message[e, h, d] = s[j, h, d] dv[e, h, d] silu(z[e, h]) phi[e];  summed[i] += message[e]
template <typename T, bool Activated>
void message_forward_kernel(const T* __restrict q, const T* __restrict k, const T* __restrict s,
                            const T* __restrict dkdv, int64_t dkdv_stride,
                            const T* __restrict bias,
                            const T* __restrict enhance, const T* __restrict phi,
                            const int64_t* __restrict centers,
                            const int64_t* __restrict neighbors, T* __restrict message,
                            T* __restrict summed, int64_t n_edges, int64_t H, int64_t D) {
  const int64_t F = H * D;
  std::vector<T> act(Activated ? 0 : 2 * F);
  for (int64_t e = 0; e < n_edges; ++e) {
    const T* qi = q + centers[e] * F;
    const T* kj = k + neighbors[e] * F;
    const T* sj = s + neighbors[e] * F;
    const T* dk = dkdv + e * dkdv_stride;
    if constexpr (!Activated) {
      silu_row(dk, bias, act.data(), static_cast<T*>(nullptr), 2 * F);
      dk = act.data();
    }
    const T* dv = dk + F;
    T* out = message + e * F;
    T* sum_i = summed + centers[e] * F;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t o = h * D;
      T z = enhance[e * H + h];
#pragma omp simd reduction(+ : z)
      for (int64_t d = 0; d < D; ++d) z += qi[o + d] * kj[o + d] * dk[o + d];
      const T att = z / (T(1) + std::exp(-z)) * phi[e];
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        const T value = sj[o + d] * dv[o + d] * att;
        out[o + d] = value;
        sum_i[o + d] += value;
      }
    }
  }
}

// Backward of message_forward_kernel. The message's gradient is grad_message[e] plus
// grad_summed[i]; grad_q, grad_k, grad_s are accumulated into, the rest written.
template <typename T, bool Activated>
void message_backward_kernel(const T* __restrict q, const T* __restrict k,
                             const T* __restrict s, const T* __restrict dkdv,
                             int64_t dkdv_stride, const T* __restrict bias,
                             const T* __restrict enhance,
                             const T* __restrict phi, const int64_t* __restrict centers,
                             const int64_t* __restrict neighbors,
                             const T* __restrict grad_message, const T* __restrict grad_summed,
                             T* __restrict grad_q, T* __restrict grad_k, T* __restrict grad_s,
                             T* __restrict grad_dkdv, int64_t grad_dkdv_stride,
                             T* __restrict grad_enhance, T* __restrict grad_phi,
                             int64_t n_edges, int64_t H, int64_t D) {
  const int64_t F = H * D;
  std::vector<T> act(Activated ? 0 : 2 * F), sig(Activated ? 0 : 2 * F);
  for (int64_t e = 0; e < n_edges; ++e) {
    const int64_t i = centers[e], j = neighbors[e];
    const T* qi = q + i * F;
    const T* kj = k + j * F;
    const T* sj = s + j * F;
    const T* pre = dkdv + e * dkdv_stride;
    const T* dk = pre;
    if constexpr (!Activated) {
      silu_row(pre, bias, act.data(), sig.data(), 2 * F);
      dk = act.data();
    }
    const T* dv = dk + F;
    const T* gm_edge = grad_message + e * F;
    const T* gm_center = grad_summed + i * F;
    T* gq = grad_q + i * F;
    T* gk = grad_k + j * F;
    T* gs = grad_s + j * F;
    T* gdk = grad_dkdv + e * grad_dkdv_stride;
    T* gdv = gdk + F;
    T gphi = 0;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t o = h * D;
      T z = enhance[e * H + h];
#pragma omp simd reduction(+ : z)
      for (int64_t d = 0; d < D; ++d) z += qi[o + d] * kj[o + d] * dk[o + d];
      const T sigmoid = T(1) / (T(1) + std::exp(-z));
      const T silu = z * sigmoid;
      const T att = silu * phi[e];
      T gatt = 0;
#pragma omp simd reduction(+ : gatt)
      for (int64_t d = 0; d < D; ++d) {
        const T gm = gm_edge[o + d] + gm_center[o + d];
        gatt += gm * sj[o + d] * dv[o + d];
        gs[o + d] += gm * dv[o + d] * att;
        gdv[o + d] = gm * sj[o + d] * att;
      }
      gphi += gatt * silu;
      const T gz = gatt * phi[e] * sigmoid * (T(1) + z * (T(1) - sigmoid));
      grad_enhance[e * H + h] = gz;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        gq[o + d] += gz * kj[o + d] * dk[o + d];
        gk[o + d] += gz * qi[o + d] * dk[o + d];
        gdk[o + d] = gz * qi[o + d] * kj[o + d];
      }
    }
    grad_phi[e] = gphi;
    if constexpr (!Activated) silu_row_backward(act.data(), sig.data(), gdk, 2 * F);
  }
}

// Forward of the vector aggregation onto centres (the abstract edges), with the gates
// (E, 2F) = [g1, g2] (through SiLU, after adding bias, unless Activated) cut off by phi:
//   out[i, m, f] = sum over edges e of centre i of (v[j, m, f] g1[e, f] + g2[e, f] y[e, m]) phi[e]
template <typename T, bool Activated>
void aggregate_forward_kernel(const T* __restrict v, const T* __restrict gates,
                              int64_t gates_stride, const T* __restrict bias,
                              const T* __restrict y,
                              const T* __restrict phi, const int64_t* __restrict centers,
                              const int64_t* __restrict neighbors, T* __restrict out,
                              int64_t n_edges, int64_t F) {
  std::vector<T> act(Activated ? 0 : 2 * F);
  for (int64_t e = 0; e < n_edges; ++e) {
    const T* vj = v + neighbors[e] * M * F;
    const T* a = gates + e * gates_stride;
    if constexpr (!Activated) {
      silu_row(a, bias, act.data(), static_cast<T*>(nullptr), 2 * F);
      a = act.data();
    }
    const T* b = a + F;
    const T cut = phi[e];
    T* oi = out + centers[e] * M * F;
    for (int64_t m = 0; m < M; ++m) {
      const T ym = y[e * M + m] * cut;
      const T* row = vj + m * F;
      T* orow = oi + m * F;
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) orow[f] += row[f] * a[f] * cut + b[f] * ym;
    }
  }
}

// The aggregation where every v is zero (a first layer's input vectors): only the gates'
// second half g2 (E, F) enters, out[i, m, f] = sum over e of g2[e, f] y[e, m] phi[e]. Its
// linear map and SiLU then cost half, and no neighbour row is read.
template <typename T, bool Activated>
void aggregate_y_forward_kernel(const T* __restrict gates, int64_t gates_stride,
                                const T* __restrict bias, const T* __restrict y,
                                const T* __restrict phi, const int64_t* __restrict centers,
                                T* __restrict out, int64_t n_edges, int64_t F) {
  std::vector<T> act(Activated ? 0 : F);
  for (int64_t e = 0; e < n_edges; ++e) {
    const T* b = gates + e * gates_stride;
    if constexpr (!Activated) {
      silu_row(b, bias, act.data(), static_cast<T*>(nullptr), F);
      b = act.data();
    }
    T* oi = out + centers[e] * M * F;
    for (int64_t m = 0; m < M; ++m) {
      const T ym = y[e * M + m] * phi[e];
      T* orow = oi + m * F;
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) orow[f] += b[f] * ym;
    }
  }
}

template <typename T, bool Activated>
void aggregate_y_backward_kernel(const T* __restrict gates, int64_t gates_stride,
                                 const T* __restrict bias, const T* __restrict y,
                                 const T* __restrict phi, const int64_t* __restrict centers,
                                 const T* __restrict grad_out, T* __restrict grad_gates,
                                 T* __restrict grad_y, T* __restrict grad_phi,
                                 int64_t n_edges, int64_t F) {
  std::vector<T> act(Activated ? 0 : F), sig(Activated ? 0 : F);
  for (int64_t e = 0; e < n_edges; ++e) {
    const T* ye = y + e * M;
    const T* b = gates + e * gates_stride;
    if constexpr (!Activated) {
      silu_row(b, bias, act.data(), sig.data(), F);
      b = act.data();
    }
    const T cut = phi[e];
    const T* go = grad_out + centers[e] * M * F;
    T* gb = grad_gates + e * F;
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) gb[f] = 0;
    for (int64_t m = 0; m < M; ++m) {
      const T ym = ye[m];
      const T* grow = go + m * F;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t f = 0; f < F; ++f) {
        gb[f] += ym * grow[f];
        acc += b[f] * grow[f];
      }
      grad_y[e * M + m] = acc * cut;
    }
    T gphi = 0;
#pragma omp simd reduction(+ : gphi)
    for (int64_t f = 0; f < F; ++f) {
      gphi += b[f] * gb[f];
      gb[f] *= cut;
    }
    grad_phi[e] = gphi;
    if constexpr (!Activated) silu_row_backward(act.data(), sig.data(), gb, F);
  }
}

// Backward of aggregate_forward_kernel; grad_v is accumulated into, the per-edge gradients
// are written.
template <typename T, bool Activated>
void aggregate_backward_kernel(const T* __restrict v, const T* __restrict gates,
                               int64_t gates_stride, const T* __restrict bias,
                               const T* __restrict y,
                               const T* __restrict phi, const int64_t* __restrict centers,
                               const int64_t* __restrict neighbors,
                               const T* __restrict grad_out, T* __restrict grad_v,
                               T* __restrict grad_gates, T* __restrict grad_y,
                               T* __restrict grad_phi, int64_t n_edges, int64_t F) {
  std::vector<T> act(Activated ? 0 : 2 * F), sig(Activated ? 0 : 2 * F);
  for (int64_t e = 0; e < n_edges; ++e) {
    const T* ye = y + e * M;
    const int64_t j = neighbors[e];
    const T* vj = v + j * M * F;
    T* gvj = grad_v + j * M * F;
    const T* pre = gates + e * gates_stride;
    const T* a = pre;
    if constexpr (!Activated) {
      silu_row(pre, bias, act.data(), sig.data(), 2 * F);
      a = act.data();
    }
    const T* b = a + F;
    const T cut = phi[e];
    const T* go = grad_out + centers[e] * M * F;
    T* ga = grad_gates + e * 2 * F;
    T* gb = ga + F;
    T* gy = grad_y + e * M;
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) {
      ga[f] = 0;
      gb[f] = 0;
    }
    for (int64_t m = 0; m < M; ++m) {
      const T ym = ye[m];
      const T* row = vj + m * F;
      const T* grow = go + m * F;
      T* gvrow = gvj + m * F;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t f = 0; f < F; ++f) {
        ga[f] += row[f] * grow[f];
        gb[f] += ym * grow[f];
        gvrow[f] += a[f] * cut * grow[f];
        acc += b[f] * grow[f];
      }
      gy[m] = acc * cut;
    }
    // d out / d phi = out / phi, without dividing: sum_f g1 ga + g2 gb before scaling.
    T gphi = 0;
#pragma omp simd reduction(+ : gphi)
    for (int64_t f = 0; f < F; ++f) {
      gphi += a[f] * ga[f] + b[f] * gb[f];
      ga[f] *= cut;
      gb[f] *= cut;
    }
    grad_phi[e] = gphi;
    if constexpr (!Activated) silu_row_backward(act.data(), sig.data(), ga, 2 * F);
  }
}

// The group CG transform of the abstract edges (group_cg.py) with the channel shuffle.
// For each atom, group g and path p = (l1, l2, l3) with Wigner 3j symbols C (d1, d2, d3):
//   c[j, k, u] = sum_i C[i, j, k] a[l1_i, u]          (a, b: the atom's (8, T) block of g)
//   P[k, u, v] = norm[l3] sum_j c[j, k, u] b[l2_j, v]
//   out[l3_k, w] += sum_{u, v} P[k, u, v] W[g, p, u, v, w]
// and output channel T g + w is written to channel (T g + w - shift) mod F.
// The kernels work group by group on blocks of L atoms, L the atoms that fill one 64-byte
// vector (16 in float32, 8 in float64): every block is copied to (8, T, L) buffers with
// the atom last, so each step above is a full-width vector operation over L atoms with a
// weight broadcast from L1. (Vectors along the T = 8 channels of a group were half as
// wide.) Lanes past the last atom hold zeros and are not written back.
struct CGEntry {
  int64_t i, j, k;
  double value;
};

struct Path {
  int64_t d2, d3, o1, o2, o3;
  std::vector<CGEntry> entries;  // the nonzero symbols
  double norm;
};

std::vector<Path> make_paths(const std::vector<torch::Tensor>& cg, double norm1, double norm2) {
  TORCH_CHECK(cg.size() == 4, "cg: expected the 4 paths' Wigner 3j symbols");
  std::vector<Path> paths;
  for (const auto& c : cg) {
    TORCH_CHECK(c.scalar_type() == torch::kDouble && c.is_contiguous() && c.dim() == 3,
                "cg: expected contiguous float64 (d1, d2, d3) tensors");
    auto offset = [](int64_t d) { return d == 3 ? int64_t(0) : int64_t(3); };
    const int64_t d1 = c.size(0), d2 = c.size(1), d3 = c.size(2);
    Path path{d2, d3, offset(d1), offset(d2), offset(d3), {}, d3 == 3 ? norm1 : norm2};
    const double* data = c.data_ptr<double>();
    for (int64_t i = 0; i < d1; ++i)
      for (int64_t j = 0; j < d2; ++j)
        for (int64_t k = 0; k < d3; ++k) {
          const double value = data[(i * d2 + j) * d3 + k];
          if (std::abs(value) > 1e-12) path.entries.push_back({i, j, k, value});
        }
    paths.push_back(std::move(path));
  }
  return paths;
}


// e^x on a vector. torch's SiLU spends most of its time in SLEEF's exp (to 1 ulp) and a
// division; this exp is range reduction x = n ln2 + r, |r| <= ln2 / 2, a polynomial for
// e^r and 2^n put into the exponent bits. float32: Cephes' degree-5 minimax polynomial,
// within 2e-7 relative of e^x; float64: the Taylor series to r^13, within 1e-15. Arguments
// are clamped to the range of normal numbers, so e^x saturates instead of overflowing
// (SiLU of x < -87 in float32 comes out below 1e-36 in magnitude instead of 0).
typedef int32_t Int32Lanes __attribute__((vector_size(64)));
typedef int64_t Int64Lanes __attribute__((vector_size(64)));

inline Lanes<float>::vec exp_vec(Lanes<float>::vec x) {
  using V = Lanes<float>::vec;
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const V shifter = V{} + 12582912.0f;  // 1.5 2^23: adding it rounds to an integer
  const V n = (x * 1.44269504088896341f + shifter) - shifter;
  const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 in two parts
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const Int32Lanes bits = (__builtin_convertvector(n, Int32Lanes) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline Lanes<double>::vec exp_vec(Lanes<double>::vec x) {
  using V = Lanes<double>::vec;
  x = x < -708.0 ? -708.0 : x;
  x = x > 709.0 ? 709.0 : x;
  const V shifter = V{} + 6755399441055744.0;  // 1.5 2^52
  const V n = (x * 1.4426950408889634074 + shifter) - shifter;
  const V r = (x - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
  // 1 / k! for k = 12 .. 0, after 1 / 13!
  constexpr double inverse_factorials[] = {
      1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
      1.0 / 5040.0,      1.0 / 720.0,      1.0 / 120.0,     1.0 / 24.0,     1.0 / 6.0,
      1.0 / 2.0,         1.0,              1.0};
  V p = V{} + 1.0 / 6227020800.0;
  for (const double c : inverse_factorials) p = p * r + c;
  const Int64Lanes bits = (__builtin_convertvector(n, Int64Lanes) + 1023) << 52;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// 1 / (1 + e^-x) of a vector (W = Lanes<T>::vec, the polynomial e^x) or a scalar (W = T).
template <typename T, typename W>
inline W sigmoid_as(W x) {
  if constexpr (std::is_same_v<W, T>) {
    return T(1) / (T(1) + std::exp(-x));
  } else {
    return T(1) / (T(1) + exp_vec(-x));
  }
}

// body(W{}, c) for the channels c .. c + width of W - 1 of a row of n: W = Lanes<T>::vec
// while whole vectors fit, then W = T for the channels left over.
template <typename T, typename Body>
inline void over_channels(int64_t n, Body body) {
  constexpr int L = Lanes<T>::n;
  int64_t c = 0;
  for (; c + L <= n; c += L) body(typename Lanes<T>::vec{}, c);
  for (; c < n; ++c) body(T{}, c);
}

// The linear maps before these SiLUs leave their biases to here: torch's addmm copies the
// bias into every row of its output before the product, a pass over (E, 2F) per call.
template <typename T>
void silu_row(const T* x, const T* bias, T* act, T* sig, int64_t n) {
  over_channels<T>(n, [&](auto lanes, int64_t c) {
    using W = decltype(lanes);
    W v = load_as<W>(x + c);
    if (bias != nullptr) v += load_as<W>(bias + c);
    const W s = sigmoid_as<T>(v);
    store_as(act + c, v * s);
    if (sig != nullptr) store_as(sig + c, s);
  });
}

// silu'(x) = sigma (1 + x (1 - sigma)) = sigma + silu (1 - sigma)
template <typename T>
void silu_row_backward(const T* act, const T* sig, T* grad, int64_t n) {
  over_channels<T>(n, [&](auto lanes, int64_t c) {
    using W = decltype(lanes);
    const W s = load_as<W>(sig + c);
    store_as(grad + c, load_as<W>(grad + c) * (s + load_as<W>(act + c) * (T(1) - s)));
  });
}

// The edge update f_next = f + silu(p + bias) rej, and its backward:
//   grad_rej = grad silu(p + bias),  grad_p = grad rej silu'(p + bias)   (grad_f = grad)
// p and grad_p may have strided rows (sp, sgp: a block of columns of the stacked maps).
template <typename T>
void edge_update_forward_kernel(const T* f, const T* p, int64_t sp, const T* bias,
                                const T* rej, T* out, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    const T *fi = f + i * cols, *pi = p + i * sp, *ri = rej + i * cols;
    T* oi = out + i * cols;
    over_channels<T>(cols, [&](auto lanes, int64_t c) {
      using W = decltype(lanes);
      const W v = load_as<W>(pi + c) + load_as<W>(bias + c);
      store_as(oi + c, load_as<W>(fi + c) + v * sigmoid_as<T>(v) * load_as<W>(ri + c));
    });
  }
}

template <typename T>
void edge_update_backward_kernel(const T* grad, const T* p, int64_t sp, const T* bias,
                                 const T* rej, T* grad_rej, T* grad_p, int64_t sgp,
                                 int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    const T *gi = grad + i * cols, *pi = p + i * sp, *ri = rej + i * cols;
    T *gri = grad_rej + i * cols, *gpi = grad_p + i * sgp;
    over_channels<T>(cols, [&](auto lanes, int64_t c) {
      using W = decltype(lanes);
      const W v = load_as<W>(pi + c) + load_as<W>(bias + c);
      const W s = sigmoid_as<T>(v), g = load_as<W>(gi + c);
      store_as(gri + c, g * v * s);
      store_as(gpi + c, g * load_as<W>(ri + c) * s * (T(1) + v * (T(1) - s)));
    });
  }
}

// block[m][u][l] = x[n0 + l, m, col0 + u] for the atoms n0 .. n0 + count - 1, zero beyond.
template <typename T, int TG>
void load_block(const T* x, int64_t n0, int count, int64_t F, int64_t col0, T* block) {
  constexpr int L = Lanes<T>::n;
  if (count < L) std::fill(block, block + M * TG * L, T(0));
  for (int l = 0; l < count; ++l)
    for (int64_t m = 0; m < M; ++m) {
      const T* row = x + (n0 + l) * M * F + m * F + col0;
      T* dst = block + m * TG * L + l;
      for (int u = 0; u < TG; ++u) dst[u * L] = row[u];
    }
}

// c[j d3 + k][u][:] for all j, k of a path, from the block a (8, T, L).
template <typename T, int TG>
void couple_block(const Path& P, const T* a, T* c) {
  constexpr int L = Lanes<T>::n;
  std::fill(c, c + P.d2 * P.d3 * TG * L, T(0));
  for (const CGEntry& e : P.entries) {
    const T value = T(e.value);
    const T* ai = a + (P.o1 + e.i) * TG * L;
    T* cjk = c + (e.j * P.d3 + e.k) * TG * L;
#pragma omp simd
    for (int ul = 0; ul < TG * L; ++ul) cjk[ul] += value * ai[ul];
  }
}

// pair[u T + v][:] = norm sum_j c[j d3 + k][u][:] b[l2_j][v][:] for one k of a path.
template <typename T, int TG>
void pair_block(const Path& P, int64_t k, const T* c, const T* b, T norm, T* pair) {
  using V = typename Lanes<T>::vec;
  constexpr int L = Lanes<T>::n;
  for (int u = 0; u < TG; ++u) {
    V sums[TG] = {};
    for (int64_t j = 0; j < P.d2; ++j) {
      const V cu = load_vec(c + ((j * P.d3 + k) * TG + u) * L);
      const T* bj = b + (P.o2 + j) * TG * L;
      for (int v = 0; v < TG; ++v) sums[v] += cu * load_vec(bj + v * L);
    }
    for (int v = 0; v < TG; ++v) store_vec(pair + (u * TG + v) * L, sums[v] * norm);
  }
}

template <typename T, int TG>
void group_cg_forward_kernel(const T* __restrict a, const T* __restrict b,
                             const T* __restrict weight, const std::vector<Path>& paths,
                             T* __restrict out, int64_t N, int64_t G, int64_t shift) {
  using V = typename Lanes<T>::vec;
  constexpr int L = Lanes<T>::n;
  constexpr int TT = TG * TG;
  const int64_t F = G * TG;
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    std::vector<T> buffer((3 * M * TG + 25 * TG + TT) * L);
    T* ablock = buffer.data();
    T* bblock = ablock + M * TG * L;
    T* acc = bblock + M * TG * L;
    T* coupled = acc + M * TG * L;
    T* pair = coupled + 25 * TG * L;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t dest = ((g * TG - shift) % F + F) % F;
      for (int64_t n0 = 0; n0 < N; n0 += L) {
        const int count = static_cast<int>(std::min<int64_t>(L, N - n0));
        load_block<T, TG>(a, n0, count, F, g * TG, ablock);
        load_block<T, TG>(b, n0, count, F, g * TG, bblock);
        std::fill(acc, acc + M * TG * L, T(0));
        for (size_t p = 0; p < paths.size(); ++p) {
          const Path& P = paths[p];
          const T* W = weight + (g * 4 + int64_t(p)) * TT * TG;
          couple_block<T, TG>(P, ablock, coupled);
          for (int64_t k = 0; k < P.d3; ++k) {
            pair_block<T, TG>(P, k, coupled, bblock, T(P.norm), pair);
            // out[w] += sum_uv pair[uv] W[uv, w]: TG sums in registers, each pair vector
            // loaded once for TG FMAs with a broadcast weight.
            T* o = acc + (P.o3 + k) * TG * L;
            V sums[TG];
            for (int w = 0; w < TG; ++w) sums[w] = load_vec(o + w * L);
            for (int uv = 0; uv < TT; ++uv) {
              const V puv = load_vec(pair + uv * L);
              const T* Wuv = W + uv * TG;
              for (int w = 0; w < TG; ++w) sums[w] += puv * Wuv[w];
            }
            for (int w = 0; w < TG; ++w) store_vec(o + w * L, sums[w]);
          }
        }
        for (int l = 0; l < count; ++l)
          for (int64_t m = 0; m < M; ++m) {
            T* row = out + (n0 + l) * M * F + m * F;
            const T* src = acc + m * TG * L + l;
            for (int w = 0; w < TG; ++w) row[(dest + w) % F] = src[w * L];
          }
      }
    }
  });
}

// Backward of group_cg_forward_kernel for a and b (the weights are frozen):
//   gP[k, u, v] = norm sum_w gout[l3_k, w] W[u, v, w]
//   gb[l2_j, v] += sum_{k, u} gP[k, u, v] c[j, k, u]
//   gc[j, k, u] = sum_v gP[k, u, v] b[l2_j, v];  ga[l1_i, u] += sum_{j, k} C[i, j, k] gc[j, k, u]
// Every (atom, channel) of grad_a and grad_b is written once.
template <typename T, int TG>
void group_cg_backward_kernel(const T* __restrict a, const T* __restrict b,
                              const T* __restrict weight, const std::vector<Path>& paths,
                              const T* __restrict grad_out, T* __restrict grad_a,
                              T* __restrict grad_b, int64_t N, int64_t G, int64_t shift) {
  using V = typename Lanes<T>::vec;
  constexpr int L = Lanes<T>::n;
  constexpr int TT = TG * TG;
  const int64_t F = G * TG;
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    std::vector<T> buffer((5 * M * TG + 2 * 25 * TG + TT) * L);
    T* ablock = buffer.data();
    T* bblock = ablock + M * TG * L;
    T* gout = bblock + M * TG * L;
    T* ga = gout + M * TG * L;
    T* gb = ga + M * TG * L;
    T* coupled = gb + M * TG * L;
    T* gcoupled = coupled + 25 * TG * L;
    T* gpair = gcoupled + 25 * TG * L;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t src = ((g * TG - shift) % F + F) % F;
      for (int64_t n0 = 0; n0 < N; n0 += L) {
        const int count = static_cast<int>(std::min<int64_t>(L, N - n0));
        load_block<T, TG>(a, n0, count, F, g * TG, ablock);
        load_block<T, TG>(b, n0, count, F, g * TG, bblock);
        if (count < L) std::fill(gout, gout + M * TG * L, T(0));
        for (int l = 0; l < count; ++l)
          for (int64_t m = 0; m < M; ++m) {
            const T* row = grad_out + (n0 + l) * M * F + m * F;
            T* dst = gout + m * TG * L + l;
            for (int w = 0; w < TG; ++w) dst[w * L] = row[(src + w) % F];
          }
        std::fill(ga, ga + 2 * M * TG * L, T(0));  // ga and gb
        for (size_t p = 0; p < paths.size(); ++p) {
          const Path& P = paths[p];
          const T* W = weight + (g * 4 + int64_t(p)) * TT * TG;
          const T norm = T(P.norm);
          couple_block<T, TG>(P, ablock, coupled);
          std::fill(gcoupled, gcoupled + P.d2 * P.d3 * TG * L, T(0));
          for (int64_t k = 0; k < P.d3; ++k) {
            const T* go = gout + (P.o3 + k) * TG * L;
            // gP[uv] = norm sum_w go[w] W[uv, w], TG values of uv at a time in registers.
            for (int uv0 = 0; uv0 < TT; uv0 += TG) {
              V sums[TG] = {};
              for (int w = 0; w < TG; ++w) {
                const V gw = load_vec(go + w * L);
                for (int r = 0; r < TG; ++r) sums[r] += gw * W[(uv0 + r) * TG + w];
              }
              for (int r = 0; r < TG; ++r) store_vec(gpair + (uv0 + r) * L, sums[r] * norm);
            }
            for (int64_t j = 0; j < P.d2; ++j) {
              const T* c = coupled + (j * P.d3 + k) * TG * L;
              const T* bj = bblock + (P.o2 + j) * TG * L;
              T* gbj = gb + (P.o2 + j) * TG * L;
              T* gc = gcoupled + (j * P.d3 + k) * TG * L;
              V gbsum[TG];
              for (int v = 0; v < TG; ++v) gbsum[v] = load_vec(gbj + v * L);
              for (int u = 0; u < TG; ++u) {
                const V cu = load_vec(c + u * L);
                V gcu = load_vec(gc + u * L);
                for (int v = 0; v < TG; ++v) {
                  const V gp = load_vec(gpair + (u * TG + v) * L);
                  gbsum[v] += gp * cu;
                  gcu += gp * load_vec(bj + v * L);
                }
                store_vec(gc + u * L, gcu);
              }
              for (int v = 0; v < TG; ++v) store_vec(gbj + v * L, gbsum[v]);
            }
          }
          for (const CGEntry& e : P.entries) {
            const T value = T(e.value);
            T* gai = ga + (P.o1 + e.i) * TG * L;
            const T* gc = gcoupled + (e.j * P.d3 + e.k) * TG * L;
#pragma omp simd
            for (int ul = 0; ul < TG * L; ++ul) gai[ul] += value * gc[ul];
          }
        }
        for (int l = 0; l < count; ++l)
          for (int64_t m = 0; m < M; ++m) {
            T* row_a = grad_a + (n0 + l) * M * F + m * F + g * TG;
            T* row_b = grad_b + (n0 + l) * M * F + m * F + g * TG;
            const T* from_a = ga + m * TG * L + l;
            const T* from_b = gb + m * TG * L + l;
            for (int u = 0; u < TG; ++u) {
              row_a[u] = from_a[u * L];
              row_b[u] = from_b[u * L];
            }
          }
      }
    }
  });
}

// Body(std::true_type) where the kernel's input is already through SiLU, else
// Body(std::false_type): the kernel applies SiLU itself.
template <typename Body>
void dispatch_activated(bool activated, Body body) {
  if (activated) {
    body(std::true_type{});
  } else {
    body(std::false_type{});
  }
}

// Calls body<TG>() for the supported group sizes.
template <typename Body>
void dispatch_group_size(int64_t group_size, Body body) {
  switch (group_size) {
    case 4: body(std::integral_constant<int, 4>{}); break;
    case 8: body(std::integral_constant<int, 8>{}); break;
    case 16: body(std::integral_constant<int, 16>{}); break;
    default: TORCH_CHECK(false, "group CG kernel: group size T=", group_size,
                         " is not compiled; expected 4, 8 or 16");
  }
}

// Every index of ``index`` (int64, contiguous) in [0, rows): a bad one would write outside
// a buffer, where torch's own indexing raises.
void check_index(const torch::Tensor& index, int64_t rows, const char* name) {
  TORCH_CHECK(index.scalar_type() == torch::kLong && index.is_contiguous() &&
                  index.device().is_cpu(),
              name, ": expected a contiguous int64 CPU tensor");
  const int64_t* data = index.data_ptr<int64_t>();
  for (int64_t e = 0; e < index.numel(); ++e)
    TORCH_CHECK(data[e] >= 0 && data[e] < rows, name, ": index ", data[e], " outside [0, ",
                rows, ")");
}

void check_edges(const torch::Tensor& y, const torch::Tensor& centers,
                 const torch::Tensor& neighbors) {
  TORCH_CHECK(y.dim() == 2 && y.size(1) == M && y.is_contiguous(),
              "y: expected contiguous (E, 8), got ", y.sizes());
  TORCH_CHECK(centers.numel() == y.size(0) && neighbors.numel() == y.size(0),
              "centers and neighbors: expected one entry per edge");
}

void check_rows(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, ": expected a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, ": expected dtype ",
              like.scalar_type(), ", got ", t.scalar_type());
}

// A 2-D CPU tensor of rows whose elements are contiguous (its rows may be strided: a block
// of columns of a wider tensor), of like's dtype.
void check_row_block(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 2 && (t.stride(1) == 1 || t.size(1) <= 1),
              name, ": expected a 2-D CPU tensor with contiguous rows, got sizes ", t.sizes(),
              " and strides ", t.strides());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, ": expected dtype ",
              like.scalar_type(), ", got ", t.scalar_type());
}

void check_same_sizes(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.sizes() == like.sizes(), name, ": expected sizes ", like.sizes(), ", got ",
              t.sizes());
}

// A bias added before a kernel's SiLU: (n,) contiguous, or empty for none (and empty where
// the input is already activated).
void check_bias(const torch::Tensor& bias, int64_t n, bool activated, const torch::Tensor& like) {
  if (bias.numel() == 0) return;
  check_rows(bias, "bias", like);
  TORCH_CHECK(!activated, "bias: expected none for activated inputs");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == n, "bias: expected (", n, "), got ",
              bias.sizes());
}

template <typename T>
const T* bias_ptr(const torch::Tensor& bias) {
  return bias.numel() == 0 ? nullptr : bias.data_ptr<T>();
}

// A gradient the kernel adds into: contiguous, of like's sizes and dtype.
void check_accumulator(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  check_rows(t, name, like);
  check_same_sizes(t, name, like);
}

std::vector<torch::Tensor> invariants_forward(torch::Tensor v, torch::Tensor wc, torch::Tensor wn,
                                              torch::Tensor y, torch::Tensor centers,
                                              torch::Tensor neighbors) {
  check_edges(y, centers, neighbors);
  check_rows(v, "v", y);
  TORCH_CHECK(v.dim() == 3 && v.size(1) == M, "v: expected (U, 8, F), got ", v.sizes());
  check_index(neighbors, v.size(0), "neighbors");
  const bool edge_update = wc.numel() > 0;
  const int64_t E = y.size(0), F = v.size(2);
  auto dot = torch::empty({E, F}, v.options());
  auto rej = torch::empty({edge_update ? E : 0, F}, v.options());
  if (edge_update) {
    check_rows(wc, "wc", y);
    check_rows(wn, "wn", y);
    TORCH_CHECK(wc.dim() == 3 && wc.size(1) == M && wc.size(2) == F && wn.sizes() == v.sizes(),
                "wc, wn: expected (C, 8, F) and (U, 8, F)");
    check_index(centers, wc.size(0), "centers");
  }
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "invariants_forward", [&] {
    invariants_forward_kernel<scalar_t>(
        v.data_ptr<scalar_t>(), edge_update ? wc.data_ptr<scalar_t>() : nullptr,
        edge_update ? wn.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
        centers.data_ptr<int64_t>(), neighbors.data_ptr<int64_t>(), dot.data_ptr<scalar_t>(),
        edge_update ? rej.data_ptr<scalar_t>() : nullptr, E, F, edge_update);
  });
  return {dot, rej};
}

// grad_v and grad_wn (like v and wn) are added into. order: the edges in the order to
// visit them, a permutation of 0 .. E - 1 (int64; ordered by neighbour, the neighbours' rows
// stay in L1 across their edges, instead of coming from L2 or L3 once per edge).
std::vector<torch::Tensor> invariants_backward(torch::Tensor v, torch::Tensor wc,
                                               torch::Tensor wn, torch::Tensor y,
                                               torch::Tensor centers, torch::Tensor neighbors,
                                               torch::Tensor order, torch::Tensor grad_dot,
                                               torch::Tensor grad_rej, torch::Tensor grad_v,
                                               torch::Tensor grad_wn) {
  check_edges(y, centers, neighbors);
  check_rows(grad_dot, "grad_dot", y);
  check_accumulator(grad_v, "grad_v", v);
  check_accumulator(grad_wn, "grad_wn", wn);
  const bool edge_update = grad_rej.numel() > 0;
  const int64_t E = y.size(0), F = v.size(2);
  auto grad_wc = torch::zeros_like(wc);
  auto grad_y = torch::zeros_like(y);
  if (edge_update) {
    check_rows(grad_rej, "grad_rej", y);
    check_index(centers, wc.size(0), "centers");
  }
  check_index(neighbors, v.size(0), "neighbors");
  TORCH_CHECK(order.numel() == E, "order: expected one entry per edge");
  check_index(order, E, "order");
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "invariants_backward", [&] {
    invariants_backward_kernel<scalar_t>(
        v.data_ptr<scalar_t>(), edge_update ? wc.data_ptr<scalar_t>() : nullptr,
        edge_update ? wn.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
        centers.data_ptr<int64_t>(), neighbors.data_ptr<int64_t>(),
        grad_dot.data_ptr<scalar_t>(), edge_update ? grad_rej.data_ptr<scalar_t>() : nullptr,
        grad_v.data_ptr<scalar_t>(), edge_update ? grad_wc.data_ptr<scalar_t>() : nullptr,
        edge_update ? grad_wn.data_ptr<scalar_t>() : nullptr, grad_y.data_ptr<scalar_t>(),
        order.data_ptr<int64_t>(), E, F);
  });
  return {grad_v, grad_wc, grad_wn, grad_y};
}

torch::Tensor aggregate_forward(torch::Tensor v, torch::Tensor gates, torch::Tensor bias,
                                torch::Tensor y, torch::Tensor phi, torch::Tensor centers,
                                torch::Tensor neighbors, int64_t n_centers, bool activated) {
  check_edges(y, centers, neighbors);
  check_rows(v, "v", y);
  check_row_block(gates, "gates", y);
  check_rows(phi, "phi", y);
  TORCH_CHECK(v.dim() == 3 && v.size(1) == M, "v: expected (U, 8, F), got ", v.sizes());
  // Gates of width F: the second half g2 only, and every v is zero (v then has no rows).
  const int64_t E = y.size(0), F = v.size(2);
  const bool with_v = gates.size(1) != F;
  const int64_t G = with_v ? 2 * F : F;
  TORCH_CHECK(gates.dim() == 2 && gates.size(0) == E && gates.size(1) == G,
              "gates: expected (E, 2F) or, with v of no rows, (E, F); got ", gates.sizes());
  TORCH_CHECK(with_v || v.size(0) == 0, "v: expected no rows with gates of width F");
  if (with_v) check_index(neighbors, v.size(0), "neighbors");
  check_index(centers, n_centers, "centers");
  TORCH_CHECK(phi.numel() == E, "phi: expected (E,)");
  check_bias(bias, G, activated, y);
  auto out = torch::zeros({n_centers, M, F}, v.options());
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "aggregate_forward", [&] {
    dispatch_activated(activated, [&](auto act) {
      if (!with_v) {
        aggregate_y_forward_kernel<scalar_t, decltype(act)::value>(
            gates.data_ptr<scalar_t>(), gates.stride(0), bias_ptr<scalar_t>(bias),
            y.data_ptr<scalar_t>(), phi.data_ptr<scalar_t>(), centers.data_ptr<int64_t>(),
            out.data_ptr<scalar_t>(), E, F);
        return;
      }
      aggregate_forward_kernel<scalar_t, decltype(act)::value>(
          v.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(), gates.stride(0),
          bias_ptr<scalar_t>(bias), y.data_ptr<scalar_t>(), phi.data_ptr<scalar_t>(),
          centers.data_ptr<int64_t>(), neighbors.data_ptr<int64_t>(),
          out.data_ptr<scalar_t>(), E, F);
    });
  });
  return out;
}

// grad_v (like v) is added into.
std::vector<torch::Tensor> aggregate_backward(torch::Tensor v, torch::Tensor gates,
                                              torch::Tensor bias, torch::Tensor y,
                                              torch::Tensor phi, torch::Tensor centers,
                                              torch::Tensor neighbors, torch::Tensor grad_out,
                                              bool activated, torch::Tensor grad_v) {
  check_edges(y, centers, neighbors);
  check_rows(grad_out, "grad_out", y);
  check_row_block(gates, "gates", y);
  check_accumulator(grad_v, "grad_v", v);
  const int64_t E = y.size(0), F = v.size(2);
  const bool with_v = gates.size(1) != F;  // as in aggregate_forward
  const int64_t G = with_v ? 2 * F : F;
  TORCH_CHECK(with_v || v.size(0) == 0, "v: expected no rows with gates of width F");
  if (with_v) check_index(neighbors, v.size(0), "neighbors");
  TORCH_CHECK(grad_out.dim() == 3 && grad_out.size(1) == M && grad_out.size(2) == v.size(2),
              "grad_out: expected (C, 8, F), got ", grad_out.sizes());
  check_index(centers, grad_out.size(0), "centers");
  TORCH_CHECK(gates.size(0) == E && gates.size(1) == G, "gates: expected (E, ", G, "), got ",
              gates.sizes());
  check_bias(bias, G, activated, y);
  auto grad_gates = torch::empty(gates.sizes(), gates.options());
  auto grad_y = torch::empty_like(y);
  auto grad_phi = torch::empty_like(phi);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "aggregate_backward", [&] {
    dispatch_activated(activated, [&](auto act) {
      if (!with_v) {
        aggregate_y_backward_kernel<scalar_t, decltype(act)::value>(
            gates.data_ptr<scalar_t>(), gates.stride(0), bias_ptr<scalar_t>(bias),
            y.data_ptr<scalar_t>(), phi.data_ptr<scalar_t>(), centers.data_ptr<int64_t>(),
            grad_out.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>(),
            grad_y.data_ptr<scalar_t>(), grad_phi.data_ptr<scalar_t>(), E, F);
        return;
      }
      aggregate_backward_kernel<scalar_t, decltype(act)::value>(
          v.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(), gates.stride(0),
          bias_ptr<scalar_t>(bias), y.data_ptr<scalar_t>(), phi.data_ptr<scalar_t>(),
          centers.data_ptr<int64_t>(), neighbors.data_ptr<int64_t>(),
          grad_out.data_ptr<scalar_t>(),
          grad_v.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>(),
          grad_y.data_ptr<scalar_t>(), grad_phi.data_ptr<scalar_t>(), E, F);
    });
  });
  return {grad_v, grad_gates, grad_y, grad_phi};
}

// q (C, H, D), k and s (U, H, D), dkdv (E, 2 H D), enhance (E, H), phi (E,).
std::vector<torch::Tensor> message_forward(torch::Tensor q, torch::Tensor k, torch::Tensor s,
                                           torch::Tensor dkdv, torch::Tensor bias,
                                           torch::Tensor enhance,
                                           torch::Tensor phi, torch::Tensor centers,
                                           torch::Tensor neighbors, int64_t n_centers,
                                           bool activated) {
  check_rows(q, "q", q);
  check_rows(k, "k", q);
  check_rows(s, "s", q);
  check_row_block(dkdv, "dkdv", q);
  check_rows(enhance, "enhance", q);
  check_rows(phi, "phi", q);
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && s.dim() == 3 && k.sizes() == s.sizes() &&
                  k.size(1) == q.size(1) && k.size(2) == q.size(2),
              "q, k, s: expected (rows, H, D) alike");
  check_index(centers, q.size(0), "centers");
  check_index(neighbors, k.size(0), "neighbors");
  TORCH_CHECK(n_centers == q.size(0), "n_centers: expected q's rows");
  const int64_t E = centers.numel(), H = q.size(1), D = q.size(2);
  TORCH_CHECK(neighbors.numel() == E && dkdv.size(0) == E && dkdv.size(1) == 2 * H * D &&
                  enhance.size(0) == E && enhance.size(1) == H && phi.numel() == E,
              "message inputs: inconsistent shapes");
  check_bias(bias, 2 * H * D, activated, q);
  auto message = torch::empty({E, H * D}, q.options());
  auto summed = torch::zeros({n_centers, H * D}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "message_forward", [&] {
    dispatch_activated(activated, [&](auto act) {
      message_forward_kernel<scalar_t, decltype(act)::value>(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
          dkdv.data_ptr<scalar_t>(), dkdv.stride(0), bias_ptr<scalar_t>(bias),
          enhance.data_ptr<scalar_t>(), phi.data_ptr<scalar_t>(),
          centers.data_ptr<int64_t>(), neighbors.data_ptr<int64_t>(),
          message.data_ptr<scalar_t>(),
          summed.data_ptr<scalar_t>(), E, H, D);
    });
  });
  return {message, summed};
}

// grad_dkdv: where the gradient of dkdv goes (returned), e.g. a block of columns of the
// stacked linear maps' gradient; of the pre-activations unless ``activated``. grad_k and
// grad_s (like k and s) are added into.
std::vector<torch::Tensor> message_backward(torch::Tensor q, torch::Tensor k, torch::Tensor s,
                                            torch::Tensor dkdv, torch::Tensor bias,
                                            torch::Tensor enhance, torch::Tensor phi,
                                            torch::Tensor centers, torch::Tensor neighbors,
                                            torch::Tensor grad_message,
                                            torch::Tensor grad_summed, bool activated,
                                            torch::Tensor grad_dkdv, torch::Tensor grad_k,
                                            torch::Tensor grad_s) {
  check_rows(grad_message, "grad_message", q);
  check_rows(grad_summed, "grad_summed", q);
  check_row_block(dkdv, "dkdv", q);
  check_row_block(grad_dkdv, "grad_dkdv", q);
  check_same_sizes(grad_dkdv, "grad_dkdv", dkdv);
  check_index(centers, q.size(0), "centers");
  check_index(neighbors, k.size(0), "neighbors");
  const int64_t E = centers.numel(), H = q.size(1), D = q.size(2);
  TORCH_CHECK(dkdv.size(0) == E && dkdv.size(1) == 2 * H * D, "dkdv: expected (E, 2F)");
  check_bias(bias, 2 * H * D, activated, q);
  check_accumulator(grad_k, "grad_k", k);
  check_accumulator(grad_s, "grad_s", s);
  auto grad_q = torch::zeros_like(q);
  auto grad_enhance = torch::empty_like(enhance);
  auto grad_phi = torch::empty_like(phi);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "message_backward", [&] {
    dispatch_activated(activated, [&](auto act) {
      message_backward_kernel<scalar_t, decltype(act)::value>(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
          dkdv.data_ptr<scalar_t>(), dkdv.stride(0), bias_ptr<scalar_t>(bias),
          enhance.data_ptr<scalar_t>(), phi.data_ptr<scalar_t>(),
          centers.data_ptr<int64_t>(), neighbors.data_ptr<int64_t>(),
          grad_message.data_ptr<scalar_t>(),
          grad_summed.data_ptr<scalar_t>(), grad_q.data_ptr<scalar_t>(),
          grad_k.data_ptr<scalar_t>(), grad_s.data_ptr<scalar_t>(),
          grad_dkdv.data_ptr<scalar_t>(), grad_dkdv.stride(0),
          grad_enhance.data_ptr<scalar_t>(), grad_phi.data_ptr<scalar_t>(), E, H, D);
    });
  });
  return {grad_q, grad_k, grad_s, grad_dkdv, grad_enhance, grad_phi};
}

torch::Tensor group_cg_forward(torch::Tensor a, torch::Tensor b, torch::Tensor weight,
                               std::vector<torch::Tensor> cg, double norm1, double norm2,
                               int64_t shift) {
  check_rows(a, "a", weight);
  check_rows(b, "b", weight);
  check_rows(weight, "weight", weight);
  TORCH_CHECK(weight.dim() == 5 && weight.size(1) == 4, "weight: expected (G, 4, T, T, T)");
  const int64_t N = a.size(0), G = weight.size(0), Tg = weight.size(2);
  TORCH_CHECK(a.dim() == 3 && a.size(1) == M && a.size(2) == G * Tg && b.sizes() == a.sizes(),
              "a, b: expected (N, 8, G T)");
  const auto paths = make_paths(cg, norm1, norm2);
  auto out = torch::empty_like(a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "group_cg_forward", [&] {
    dispatch_group_size(Tg, [&](auto tg) {
      group_cg_forward_kernel<scalar_t, decltype(tg)::value>(
          a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), paths,
          out.data_ptr<scalar_t>(), N, G, shift);
    });
  });
  return out;
}

std::vector<torch::Tensor> group_cg_backward(torch::Tensor a, torch::Tensor b,
                                             torch::Tensor weight, std::vector<torch::Tensor> cg,
                                             double norm1, double norm2, int64_t shift,
                                             torch::Tensor grad_out) {
  check_rows(a, "a", weight);
  check_rows(b, "b", weight);
  check_rows(weight, "weight", weight);
  check_rows(grad_out, "grad_out", weight);
  TORCH_CHECK(weight.dim() == 5 && weight.size(1) == 4, "weight: expected (G, 4, T, T, T)");
  const int64_t N = a.size(0), G = weight.size(0), Tg = weight.size(2);
  TORCH_CHECK(a.dim() == 3 && a.size(1) == M && a.size(2) == G * Tg && b.sizes() == a.sizes() &&
                  grad_out.sizes() == a.sizes(),
              "a, b, grad_out: expected (N, 8, G T)");
  const auto paths = make_paths(cg, norm1, norm2);
  auto grad_a = torch::empty_like(a);  // every element is written
  auto grad_b = torch::empty_like(b);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "group_cg_backward", [&] {
    dispatch_group_size(Tg, [&](auto tg) {
      group_cg_backward_kernel<scalar_t, decltype(tg)::value>(
          a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), paths,
          grad_out.data_ptr<scalar_t>(), grad_a.data_ptr<scalar_t>(),
          grad_b.data_ptr<scalar_t>(), N, G, shift);
    });
  });
  return {grad_a, grad_b};
}

torch::Tensor edge_update_forward(torch::Tensor f, torch::Tensor pre, torch::Tensor bias,
                                  torch::Tensor rejected) {
  check_rows(f, "f", f);
  check_rows(rejected, "rejected", f);
  check_row_block(pre, "pre", f);
  check_same_sizes(pre, "pre", f);
  TORCH_CHECK(f.dim() == 2 && rejected.sizes() == f.sizes(),
              "f, rejected: expected (E, F) alike, got ", f.sizes(), " and ", rejected.sizes());
  check_rows(bias, "bias", f);
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == f.size(1), "bias: expected (F,)");
  auto out = torch::empty_like(f);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "edge_update_forward", [&] {
    edge_update_forward_kernel<scalar_t>(f.data_ptr<scalar_t>(), pre.data_ptr<scalar_t>(),
                                         pre.stride(0), bias.data_ptr<scalar_t>(),
                                         rejected.data_ptr<scalar_t>(),
                                         out.data_ptr<scalar_t>(), f.size(0), f.size(1));
  });
  return out;
}

// Returns grad_rejected; writes grad_pre into ``grad_pre`` (a block of columns, may be).
torch::Tensor edge_update_backward(torch::Tensor grad, torch::Tensor pre, torch::Tensor bias,
                                   torch::Tensor rejected, torch::Tensor grad_pre) {
  check_rows(grad, "grad", grad);
  check_rows(rejected, "rejected", grad);
  check_row_block(pre, "pre", grad);
  check_row_block(grad_pre, "grad_pre", grad);
  check_same_sizes(pre, "pre", grad);
  check_same_sizes(grad_pre, "grad_pre", grad);
  TORCH_CHECK(grad.dim() == 2 && rejected.sizes() == grad.sizes(),
              "grad, rejected: expected (E, F) alike");
  check_rows(bias, "bias", grad);
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == grad.size(1), "bias: expected (F,)");
  auto grad_rejected = torch::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "edge_update_backward", [&] {
    edge_update_backward_kernel<scalar_t>(
        grad.data_ptr<scalar_t>(), pre.data_ptr<scalar_t>(), pre.stride(0),
        bias.data_ptr<scalar_t>(), rejected.data_ptr<scalar_t>(),
        grad_rejected.data_ptr<scalar_t>(),
        grad_pre.data_ptr<scalar_t>(), grad_pre.stride(0), grad.size(0), grad.size(1));
  });
  return grad_rejected;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  const auto release = py::call_guard<py::gil_scoped_release>();
  m.def("invariants_forward", &invariants_forward, release);
  m.def("invariants_backward", &invariants_backward, release);
  m.def("aggregate_forward", &aggregate_forward, release);
  m.def("aggregate_backward", &aggregate_backward, release);
  m.def("message_forward", &message_forward, release);
  m.def("message_backward", &message_backward, release);
  m.def("group_cg_forward", &group_cg_forward, release);
  m.def("group_cg_backward", &group_cg_backward, release);
  m.def("edge_update_forward", &edge_update_forward, release);
  m.def("edge_update_backward", &edge_update_backward, release);
}
