// Area attention's elementwise work per block of queries, forward and backward, in float32
// (areaser.models.attention_native builds and calls it; the maths is attention_fused's block functions').
//
// A block is nb memories x nq queries of position logits s [nb, H*W, nq] (queries innermost). Each chunk of
// 8 queries (one vector: the lanes) walks the anchor (top-left) cells of the areas: the box sums of every
// area shape at the anchor from its h x w neighbourhood, their exponentials (the softmax numerators, summed
// into the denominator), the dropout keep-masks from one hash per anchor, and the weights scattered back
// onto the covered cells (suffix sums, then one add per cell). Everything between the loads and that add
// stays in registers: no pass over a block-sized buffer per shape, which is where TorchInductor's loops
// spend their time. Interior anchors have the area sides as compile-time constants (the loops unroll);
// the last rows and columns take the same code with run-time sides.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {
typedef float V __attribute__((vector_size(32)));  // 8 queries: the lanes
typedef int32_t VI __attribute__((vector_size(32)));
typedef uint32_t VU __attribute__((vector_size(32)));
constexpr int N = 8;

inline V load(const float* p) { V v; std::memcpy(&v, p, sizeof v); return v; }
inline void store(float* p, V v) { std::memcpy(p, &v, sizeof v); }
inline V vmax(V a, V b) { return a > b ? a : b; }

inline VU mix(VU u) {  // lowbias32
  u ^= u >> 16; u *= 0x7FEB352Du; u ^= u >> 15; u *= 0x846CA68Bu; return u ^ (u >> 16);
}

inline V vexp(V x) {  // exp(x) for -87 < x <= 0: 2**n exp(r), |r| <= ln 2 / 2
  const V magic = V{} + 12582912.0f;  // 1.5 * 2**23: adding it rounds to an integer
  const V t = x * 1.4426950408889634f + magic;
  const V n = t - magic;
  const V r = x - n * 0.693145751953125f - n * 1.4286068202862268e-06f;
  V p = V{} + 0.0083004135f;
  p = p * r + 0.0419219968f; p = p * r + 0.1666757097f; p = p * r + 0.4999882595f;
  p = p * r + 0.9999996767f; p = p * r + 1.0000000798f;
  return p * (V)(((VI)t - (VI)magic + 127) << 23);
}

struct Params {
  int H, W, nq, sh, sw;       // grid, queries per row, area sides that fit
  int nq_index;               // queries per row in the mask hash's element index (the unpadded count)
  bool value_mean;
  int nwords, mask, thr;      // dropout: hash words per anchor, field mask, keep threshold (nwords 0: none)
  const int32_t* keys;
  int word_of[64], shift_of[64];
};

// The hash words of one anchor's masks (as many as d.nwords), and the keep-mask (0 / -1 per lane) of shape j.
struct Masks {
  VU word[8];
  Masks(const Params& d, uint32_t base) {
    const VU lane = VU{0, 1, 2, 3, 4, 5, 6, 7};
    for (int k = 0; k < d.nwords; ++k) word[k] = mix(lane + (base + (uint32_t)d.keys[k]));
  }
  VI keep(const Params& d, int j) const {
    if (!d.nwords) return VI{} - 1;
    return (VI)(((word[d.word_of[j]] >> d.shift_of[j]) & (uint32_t)d.mask) < (uint32_t)d.thr);
  }
};

// Box sums of x over every shape at the anchor: box[h][w] sums rows 0..h and columns 0..w.
template <int SH, int SW, bool FIXED>
inline void boxes(const float* x, int stride_row, int nq, int hh_, int ww_, V (&box)[SH][SW]) {
  const int hh = FIXED ? SH : hh_, ww = FIXED ? SW : ww_;
  for (int di = 0; di < hh; ++di) {
    V acc = V{};
    for (int dj = 0; dj < ww; ++dj) {
      acc += load(x + (size_t)(di * stride_row + dj) * nq);
      box[di][dj] = di ? box[di - 1][dj] + acc : acc;
    }
  }
}

// Adds to y the weights of every area at the anchor on each cell it covers: g[h][w] is the h x w area's.
template <int SH, int SW, bool FIXED>
inline void scatter(float* y, int stride_row, int nq, int hh_, int ww_, V (&g)[SH][SW]) {
  const int hh = FIXED ? SH : hh_, ww = FIXED ? SW : ww_;
  for (int w = 0; w < ww; ++w)  // cell (di, dj) is covered by the shapes h >= di, w >= dj: suffix sums
    for (int h = hh - 2; h >= 0; --h) g[h][w] += g[h + 1][w];
  for (int h = 0; h < hh; ++h)
    for (int w = ww - 2; w >= 0; --w) g[h][w] += g[h][w + 1];
  for (int di = 0; di < hh; ++di)
    for (int dj = 0; dj < ww; ++dj) {
      float* p = y + (size_t)(di * stride_row + dj) * nq;
      store(p, load(p) + g[di][dj]);
    }
}

template <int SH, int SW, bool FIXED>
inline void fwd_anchor(const Params& d, const float* s, float* p, int hh_, int ww_, V m, V floor, V& den,
                       float factor, uint32_t base) {
  const int hh = FIXED ? SH : hh_, ww = FIXED ? SW : ww_;
  V box[SH][SW];
  boxes<SH, SW, FIXED>(s, d.W, d.nq, hh, ww, box);
  const Masks masks(d, base);
  for (int h = 0; h < hh; ++h)
    for (int w = 0; w < ww; ++w) {
      const float inv = 1.0f / float((h + 1) * (w + 1));
      const V e = vexp(vmax(box[h][w] * (factor * inv) - m, floor));
      den += e;
      box[h][w] = (V)((VI)(d.value_mean ? e * inv : e) & masks.keep(d, w * d.sh + h));
    }
  scatter<SH, SW, FIXED>(p, d.W, d.nq, hh, ww, box);
}

template <int SH, int SW, bool FIXED>
inline void bwd_anchor(const Params& d, const float* s, const float* gp, float* pv, float* ds, int hh_, int ww_,
                       V off, V low, V delta, float factor, float gscale, float cval, uint32_t base) {
  const int hh = FIXED ? SH : hh_, ww = FIXED ? SW : ww_;
  V box[SH][SW], gbox[SH][SW];
  boxes<SH, SW, FIXED>(s, d.W, d.nq, hh, ww, box);
  boxes<SH, SW, FIXED>(gp, d.W, d.nq, hh, ww, gbox);
  const Masks masks(d, base);
  for (int h = 0; h < hh; ++h)
    for (int w = 0; w < ww; ++w) {
      const float inv = 1.0f / float((h + 1) * (w + 1));
      const VI k = masks.keep(d, w * d.sh + h);
      const V wgt = vexp(vmax(box[h][w] * (factor * inv) - off, low));
      const V g = gbox[h][w] * (d.value_mean ? gscale * inv : gscale);
      gbox[h][w] = ((V)((VI)g & k) - delta) * wgt * (factor * inv);
      box[h][w] = (V)((VI)wgt & k) * (d.value_mean ? cval * inv : cval);
    }
  scatter<SH, SW, FIXED>(pv, d.W, d.nq, hh, ww, box);
  scatter<SH, SW, FIXED>(ds, d.W, d.nq, hh, ww, gbox);
}

// Every anchor of one lane chunk, the interior ones with the area sides known at compile time.
template <int SH, int SW, typename F>
inline void anchors(const Params& d, F&& f) {
  for (int i = 0; i < d.H; ++i)
    for (int j = 0; j < d.W; ++j) {
      const int hh = d.sh < d.H - i ? d.sh : d.H - i, ww = d.sw < d.W - j ? d.sw : d.W - j;
      if (hh == SH && ww == SW) f.template operator()<true>(i * d.W + j, hh, ww);
      else f.template operator()<false>(i * d.W + j, hh, ww);
    }
}

template <int SH, int SW>
void forward(const Params& d, int nb, const float* s, float* p, float* shift, float* log_den, float factor,
             float floor_, float keep) {
  const int L = d.H * d.W, nq = d.nq;
  for (int b = 0; b < nb; ++b)
    for (int c = 0; c < nq; c += N) {
      const float* sb = s + (size_t)b * L * nq + c;
      float* pb = p + (size_t)b * L * nq + c;
      V m = V{} - INFINITY, den = V{};
      for (int cell = 0; cell < L; ++cell) {
        m = vmax(m, load(sb + (size_t)cell * nq) * factor);  // the largest scaled logit
        store(pb + (size_t)cell * nq, V{});
      }
      const V floor = V{} + floor_;
      anchors<SH, SW>(d, [&]<bool FIXED>(int cell, int hh, int ww) {
        const uint32_t base = (uint32_t)(((size_t)b * L + cell) * d.nq_index + c);
        fwd_anchor<SH, SW, FIXED>(d, sb + (size_t)cell * nq, pb + (size_t)cell * nq, hh, ww, m, floor, den, factor,
                                  base);
      });
      const V scale = 1.0f / (den * keep);
      for (int cell = 0; cell < L; ++cell) store(pb + (size_t)cell * nq, load(pb + (size_t)cell * nq) * scale);
      for (int l = 0; l < N; ++l) {
        shift[(size_t)b * nq + c + l] = m[l];
        log_den[(size_t)b * nq + c + l] = std::log(den[l]);
      }
    }
}

template <int SH, int SW>
void backward(const Params& d, int nb, const float* s, const float* gp, const float* off, const float* low,
              const float* delta, float* pv, float* ds, float factor, float gscale, float cval) {
  const int L = d.H * d.W, nq = d.nq;
  for (int b = 0; b < nb; ++b)
    for (int c = 0; c < nq; c += N) {
      const size_t o = (size_t)b * L * nq + c, r = (size_t)b * nq + c;
      for (int cell = 0; cell < L; ++cell) {
        store(pv + o + (size_t)cell * nq, V{});
        store(ds + o + (size_t)cell * nq, V{});
      }
      const V voff = load(off + r), vlow = load(low + r), vdelta = load(delta + r);
      anchors<SH, SW>(d, [&]<bool FIXED>(int cell, int hh, int ww) {
        const uint32_t base = (uint32_t)(((size_t)b * L + cell) * d.nq_index + c);
        const size_t at = o + (size_t)cell * nq;
        bwd_anchor<SH, SW, FIXED>(d, s + at, gp + at, pv + at, ds + at, hh, ww, voff, vlow, vdelta, factor, gscale,
                                  cval, base);
      });
    }
}

bool make_params(Params& d, int H, int W, int nq, int nq_index, int mh, int mw, int value_mean, int threshold,
                 const int32_t* keys) {
  d = Params{};
  d.H = H; d.W = W; d.nq = nq; d.nq_index = nq_index; d.sh = mh < H ? mh : H; d.sw = mw < W ? mw : W; d.value_mean = value_mean;
  d.keys = keys;
  if (nq % N || d.sh * d.sw > 64) return false;  // 64 shapes: at most 8 words of 8 fields
  if (threshold >= 0) {
    const int tz = __builtin_ctz(threshold), bits = 16 - tz, per = 32 / bits;
    d.mask = (1 << bits) - 1; d.thr = threshold >> tz; d.nwords = (d.sh * d.sw + per - 1) / per;
    for (int j = 0; j < d.sh * d.sw; ++j) { d.word_of[j] = j / per; d.shift_of[j] = j % per * bits; }
  }
  return true;
}

#define AREA_SIZES(X) X(1, 1) X(1, 2) X(1, 3) X(2, 1) X(2, 2) X(2, 3) X(3, 1) X(3, 2) X(3, 3)
}  // namespace

extern "C" {
// 0: done; 1: unsupported arguments (the caller falls back)
int area_forward(const float* s, float* p, float* shift, float* log_den, const int32_t* keys, int nb, int H, int W,
                 int nq, int nq_index, int mh, int mw, int value_mean, float factor, float floor, int threshold,
                 float keep) {
  Params d;
  if (!make_params(d, H, W, nq, nq_index, mh, mw, value_mean, threshold, keys)) return 1;
#define X(A, B) if (d.sh == A && d.sw == B) return forward<A, B>(d, nb, s, p, shift, log_den, factor, floor, keep), 0;
  AREA_SIZES(X)
#undef X
  return 1;
}

int area_backward(const float* s, const float* gp, const float* off, const float* low, const float* delta,
                  float* pv, float* ds, const int32_t* keys, int nb, int H, int W, int nq, int nq_index, int mh, int mw,
                  int value_mean, int threshold, float factor, float gscale, float cval) {
  Params d;
  if (!make_params(d, H, W, nq, nq_index, mh, mw, value_mean, threshold, keys)) return 1;
#define X(A, B) if (d.sh == A && d.sw == B) return backward<A, B>(d, nb, s, gp, off, low, delta, pv, ds, factor, gscale, cval), 0;
  AREA_SIZES(X)
#undef X
  return 1;
}
}
