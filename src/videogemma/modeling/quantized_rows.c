/* A few rows (a decode step's) times an int8 or int4 weight, on x86 CPUs with AVX-512 (quantized_rows.py
 * compiles this at first use and says why it exists).
 *
 *   out[m, n] = Σ_k dequantised(weight)[n, k] · x[m, k]     x, out: (rows, in), (rows, out), bf16 or fp32
 *
 * Each weight row is read once, start to end, while the rows of x it meets stay in L1; the reads are
 * prefetched PREFETCH_AHEAD bytes ahead, which took a one-row int8 product from 18-19 GB/s to the ~28 GB/s
 * this CPU reads at. Sums are fp32, kept in vector lanes and reduced once a weight row.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <stdlib.h>

#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 2048 /* bytes: 512 → 23.5 GB/s, 1024 → 26.3, 2048 → 28.0, 4096 → 25.2 here */
#endif
/* int4 rows do more work a byte, so a read issued further ahead is still early enough: over the E2B decoder's int4
 * layers (2 threads, 2,048 → 4,096 alternating, three runs of 9 rounds) +6, +8 and +15 %. */
#ifndef INT4_PREFETCH_AHEAD
#define INT4_PREFETCH_AHEAD 4096
#endif
#define INT4_GROUP 128      /* input values one scale and zero cover: 64 bytes, one cache line */
#define INT4_OFFSET 8       /* stored values are q + 8 (0..15): w = (q - 8) · scale + zero */

typedef union {
    uint32_t bits;
    float value;
} float_bits;

static inline float bf16_to_float(uint16_t bits) {
    float_bits converted = {(uint32_t)bits << 16};
    return converted.value;
}

static inline uint16_t float_to_bf16(float value) { /* round to nearest, ties to even (as torch) */
    float_bits converted = {.value = value};
    if ((converted.bits & 0x7F800000u) == 0x7F800000u && (converted.bits & 0x007FFFFFu))
        return (uint16_t)((converted.bits >> 16) | 0x40); /* NaN stays NaN */
    return (uint16_t)((converted.bits + 0x7FFFu + ((converted.bits >> 16) & 1u)) >> 16);
}

/* Element `index` of a bf16 or fp32 array, as a float. */
static inline float load_value(const void *values, int64_t index, int bf16) {
    return bf16 ? bf16_to_float(((const uint16_t *)values)[index]) : ((const float *)values)[index];
}

static inline void store_value(void *values, int64_t index, float value, int bf16) {
    if (bf16)
        ((uint16_t *)values)[index] = float_to_bf16(value);
    else
        ((float *)values)[index] = value;
}

/* Into L2, not L1: a core has only ~16 L1 fill buffers, and reads prefetched into L1 held them until filled; L2
 * keeps more in flight. Over one E2B decoder layer's weights on 2 threads: int8 rows 16 → 18 GB/s, int4 13.5 → 15.2
 * (int8 activations 15.9 → 19.8), the bf16 LM head 25 → 27. */
#ifndef PREFETCH_HINT
#define PREFETCH_HINT _MM_HINT_T1
#endif
static inline void prefetch_line(const void *address) { _mm_prefetch((const char *)address, PREFETCH_HINT); }

static inline float sum_lanes(const __m512 *acc, int count) {
    __m512 sum = acc[0];
    for (int j = 1; j < count; j++) sum = _mm512_add_ps(sum, acc[j]);
    return _mm512_reduce_add_ps(sum);
}

/* weight: int8 (out, in), in % 128 == 0; scales: one a row. Returns 0, or -1 when out of memory. */
int int8_rows(const int8_t *weight, const void *scales, int scales_bf16, const void *x, int x_bf16, void *out,
              int64_t rows, int64_t out_features, int64_t in_features, int threads) {
    float *x32 = malloc(sizeof(float) * rows * in_features);
    if (!x32) return -1;
    for (int64_t i = 0; i < rows * in_features; i++) x32[i] = load_value(x, i, x_bf16);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < out_features; n++) {
        const int8_t *w = weight + n * in_features;
        const float scale = load_value(scales, n, scales_bf16);
        for (int64_t m = 0; m < rows; m++) {
            const float *xm = x32 + m * in_features;
            __m512 acc[8];
            for (int j = 0; j < 8; j++) acc[j] = _mm512_setzero_ps();
            for (int64_t k = 0; k < in_features; k += 128) {
                if (m == 0) {
                    prefetch_line(w + k + PREFETCH_AHEAD);
                    prefetch_line(w + k + PREFETCH_AHEAD + 64);
                }
                for (int j = 0; j < 8; j++) {
                    __m512i values = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + k + 16 * j)));
                    acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(values), _mm512_loadu_ps(xm + k + 16 * j), acc[j]);
                }
            }
            store_value(out, m * out_features + n, sum_lanes(acc, 8) * scale, x_bf16);
        }
    }
    free(x32);
    return 0;
}

/* 16 values of a bf16 or fp32 row from `index`, as fp32. */
static inline __m512 load16(const void *values, int64_t index, int bf16) {
    if (!bf16) return _mm512_loadu_ps((const float *)values + index);
    __m256i bits = _mm256_loadu_si256((const __m256i *)((const uint16_t *)values + index));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

/* Σ over one int4 group of q · x, q the stored values (0..15). */
#ifdef __AVX512BF16__
/* bf16 x: the group's 64 bytes taken as 32 16-bit lanes, lane j holding inputs 4j .. 4j + 3 a nibble each (low
 * first); nibble r of every lane becomes the bf16 number 128 + q (bits 0x4300 | q, exact) and meets plane r of x
 * (x[4j + r], j = 0..31), two lanes an element pair of vdpbf16ps (fp32 sums). 128 · Σ x comes off after. One load
 * and three shifts a group instead of widening each half to 16 bits (with the scales below, E2B's 8192 × 2048 int4
 * weight from L3 on 2 threads: 51 → 67 GB/s). */
static inline __m512 group_products_bf16(const uint8_t *group, const uint16_t *planes) {
    const __m512i nibble = _mm512_set1_epi16(0x0F), exponent = _mm512_set1_epi16(0x4300);
    const __m512i lanes = _mm512_loadu_si512(group);
#define NIBBLE_AS_BF16(shifted) (__m512bh) _mm512_ternarylogic_epi32(shifted, nibble, exponent, 0xEA) /* a&b | c */
    __m512 first = _mm512_dpbf16_ps(_mm512_setzero_ps(), NIBBLE_AS_BF16(lanes), (__m512bh)_mm512_loadu_si512(planes));
    __m512 second = _mm512_dpbf16_ps(_mm512_setzero_ps(), NIBBLE_AS_BF16(_mm512_srli_epi16(lanes, 8)),
                                     (__m512bh)_mm512_loadu_si512(planes + 64));
    first = _mm512_dpbf16_ps(first, NIBBLE_AS_BF16(_mm512_srli_epi16(lanes, 4)), (__m512bh)_mm512_loadu_si512(planes + 32));
    second = _mm512_dpbf16_ps(second, (__m512bh)_mm512_or_si512(_mm512_srli_epi16(lanes, 12), exponent),
                              (__m512bh)_mm512_loadu_si512(planes + 96));
#undef NIBBLE_AS_BF16
    return _mm512_add_ps(first, second);
}

/* x's planes for group_products_bf16: per group of its rows, plane r holds the inputs 4j + r. */
static void split_planes(const uint16_t *x, uint16_t *planes, int64_t groups) {
    for (int64_t g = 0; g < groups; g++)
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < INT4_GROUP / 4; j++)
                planes[g * INT4_GROUP + r * (INT4_GROUP / 4) + j] = x[g * INT4_GROUP + 4 * j + r];
}
#endif

/* fp32 x split into its even and odd inputs: the low and high nibble of each byte. */
static inline __m512 group_products_fp32(const uint8_t *group, const float *even, const float *odd) {
    const __m512i nibble = _mm512_set1_epi32(0x0F);
    __m512 acc = _mm512_setzero_ps();
    for (int c = 0; c < 4; c++) { /* 16 bytes: 32 values */
        __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(group + 16 * c)));
        __m512 low = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, nibble));
        __m512 high = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
        acc = _mm512_fmadd_ps(low, _mm512_loadu_ps(even + 16 * c), acc);
        acc = _mm512_fmadd_ps(high, _mm512_loadu_ps(odd + 16 * c), acc);
    }
    return acc;
}

#ifdef __AVX512BF16__
/* Σ_g scale_g · Σ q·x over one weight row's groups with bf16 products: sixteen groups' scales loaded at once, two
 * running sums so that consecutive groups overlap. `planes`: the row of x's planes. */
static inline float row_products_bf16(const uint8_t *w, const void *scales, int scales_bf16, const uint16_t *planes,
                                      int64_t groups, int prefetch) {
    __m512 even_groups = _mm512_setzero_ps(), odd_groups = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 16 <= groups; g += 16) {
        const __m512 scale16 = load16(scales, g, scales_bf16);
        for (int j = 0; j < 16; j += 2) {
            const uint8_t *group = w + (g + j) * (INT4_GROUP / 2);
            const uint16_t *x_at = planes + (g + j) * INT4_GROUP;
            if (prefetch) prefetch_line(group + INT4_PREFETCH_AHEAD), prefetch_line(group + INT4_PREFETCH_AHEAD + 64);
            even_groups = _mm512_fmadd_ps(group_products_bf16(group, x_at),
                                          _mm512_permutexvar_ps(_mm512_set1_epi32(j), scale16), even_groups);
            odd_groups = _mm512_fmadd_ps(group_products_bf16(group + INT4_GROUP / 2, x_at + INT4_GROUP),
                                         _mm512_permutexvar_ps(_mm512_set1_epi32(j + 1), scale16), odd_groups);
        }
    }
    for (; g < groups; g++) {
        const uint8_t *group = w + g * (INT4_GROUP / 2);
        if (prefetch) prefetch_line(group + INT4_PREFETCH_AHEAD);
        const __m512 scale = _mm512_set1_ps(load_value(scales, g, scales_bf16));
        even_groups = _mm512_fmadd_ps(group_products_bf16(group, planes + g * INT4_GROUP), scale, even_groups);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(even_groups, odd_groups));
}
#endif

/* The same with fp32 products: `even`, `odd`, the row of x's halves. */
static inline float row_products_fp32(const uint8_t *w, const void *scales, int scales_bf16, const float *even,
                                      const float *odd, int64_t groups, int prefetch) {
    __m512 total = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        const uint8_t *group = w + g * (INT4_GROUP / 2);
        if (prefetch) prefetch_line(group + INT4_PREFETCH_AHEAD);
        const int64_t at = g * (INT4_GROUP / 2);
        const __m512 scale = _mm512_set1_ps(load_value(scales, g, scales_bf16));
        total = _mm512_fmadd_ps(group_products_fp32(group, even + at, odd + at), scale, total);
    }
    return _mm512_reduce_add_ps(total);
}

/* Σ_g (zero_g − offset · scale_g) · group_sums_g over one weight row's groups, 16 at a time. */
static inline float row_offsets(const void *scales, const void *zeros, int bf16, const float *group_sums,
                                int64_t groups, float stored_offset) {
    __m512 sum = _mm512_setzero_ps();
    const __m512 offset = _mm512_set1_ps(stored_offset);
    int64_t g = 0;
    for (; g + 16 <= groups; g += 16) {
        const __m512 scale = load16(scales, g, bf16), zero = load16(zeros, g, bf16);
        sum = _mm512_fmadd_ps(_mm512_fnmadd_ps(offset, scale, zero), _mm512_loadu_ps(group_sums + g), sum);
    }
    float tail = 0.0f;
    for (; g < groups; g++)
        tail += (load_value(zeros, g, bf16) - stored_offset * load_value(scales, g, bf16)) * group_sums[g];
    return _mm512_reduce_add_ps(sum) + tail;
}

#ifdef __AVX512VNNI__
/* int8 activations (W4A8): each group of x rounded to int8 at its own scale (max |x| / 127), so that a group's
 * Σ q·x is two vpdpbusd (unsigned nibble × signed byte, four pairs a 32-bit lane) instead of four vdpbf16ps and
 * their conversions: the bf16 form spends ~13.5 cycles a group on this Xeon, above what memory delivers (docs/
 * ONDEVICE.md). x's planes: per group, its 64 even inputs, then its 64 odd ones (the low and high nibbles). */
static void quantize_groups(const void *x, int x_bf16, int8_t *planes, float *x_scales, float *quantized_sums,
                            float *exact_sums, int64_t groups) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t g = 0; g < groups; g++) {
        __m512 values[INT4_GROUP / 16], largest = _mm512_setzero_ps(), sum = _mm512_setzero_ps();
        for (int k = 0; k < INT4_GROUP / 16; k++) {
            values[k] = load16(x, g * INT4_GROUP + 16 * k, x_bf16);
            largest = _mm512_max_ps(largest, _mm512_abs_ps(values[k]));
            sum = _mm512_add_ps(sum, values[k]);
        }
        const float top = _mm512_reduce_max_ps(largest);
        const __m512 inverse = _mm512_set1_ps(top > 0.0f ? 127.0f / top : 0.0f);
        __m512i quantized_total = _mm512_setzero_si512();
        int8_t *plane = planes + g * INT4_GROUP;
        for (int k = 0; k < INT4_GROUP / 16; k += 2) { /* 32 inputs: 16 even, 16 odd */
            __m512i e = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_permutex2var_ps(values[k], even, values[k + 1]), inverse));
            __m512i o = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_permutex2var_ps(values[k], odd, values[k + 1]), inverse));
            quantized_total = _mm512_add_epi32(quantized_total, _mm512_add_epi32(e, o));
            _mm_storeu_si128((__m128i *)(plane + 8 * k), _mm512_cvtepi32_epi8(e));
            _mm_storeu_si128((__m128i *)(plane + INT4_GROUP / 2 + 8 * k), _mm512_cvtepi32_epi8(o));
        }
        x_scales[g] = top / 127.0f;
        quantized_sums[g] = x_scales[g] * (float)_mm512_reduce_add_epi32(quantized_total);
        exact_sums[g] = _mm512_reduce_add_ps(sum);
    }
}

/* Σ q·x over one group in integers: q 0..15, x −127..127, so a lane's four pairs and the group's 128 fit in 32 bits. */
static inline __m512i group_products_int8(const uint8_t *group, const int8_t *planes) {
    const __m512i nibble = _mm512_set1_epi8(0x0F), lanes = _mm512_loadu_si512(group);
    __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(lanes, nibble),
                                       _mm512_loadu_si512(planes));
    return _mm512_dpbusd_epi32(sums, _mm512_and_si512(_mm512_srli_epi16(lanes, 4), nibble),
                               _mm512_loadu_si512(planes + INT4_GROUP / 2));
}

/* Σ_g scale_g · x_scale_g · Σ q·x̂ over one weight row's groups (x̂ the rounded x), as row_products_bf16. */
static inline float row_products_int8(const uint8_t *w, const void *scales, int scales_bf16, const int8_t *planes,
                                      const float *x_scales, int64_t groups, int prefetch) {
    __m512 even_groups = _mm512_setzero_ps(), odd_groups = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 16 <= groups; g += 16) {
        const __m512 scale16 = _mm512_mul_ps(load16(scales, g, scales_bf16), _mm512_loadu_ps(x_scales + g));
        for (int j = 0; j < 16; j += 2) {
            const uint8_t *group = w + (g + j) * (INT4_GROUP / 2);
            const int8_t *x_at = planes + (g + j) * INT4_GROUP;
            if (prefetch) prefetch_line(group + INT4_PREFETCH_AHEAD), prefetch_line(group + INT4_PREFETCH_AHEAD + 64);
            even_groups = _mm512_fmadd_ps(_mm512_cvtepi32_ps(group_products_int8(group, x_at)),
                                          _mm512_permutexvar_ps(_mm512_set1_epi32(j), scale16), even_groups);
            odd_groups = _mm512_fmadd_ps(_mm512_cvtepi32_ps(group_products_int8(group + INT4_GROUP / 2, x_at + INT4_GROUP)),
                                         _mm512_permutexvar_ps(_mm512_set1_epi32(j + 1), scale16), odd_groups);
        }
    }
    for (; g < groups; g++) {
        const uint8_t *group = w + g * (INT4_GROUP / 2);
        if (prefetch) prefetch_line(group + INT4_PREFETCH_AHEAD);
        const __m512 scale = _mm512_set1_ps(load_value(scales, g, scales_bf16) * x_scales[g]);
        even_groups = _mm512_fmadd_ps(_mm512_cvtepi32_ps(group_products_int8(group, planes + g * INT4_GROUP)), scale,
                                      even_groups);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(even_groups, odd_groups));
}

/* Σ_g zero_g · exact_g − offset · scale_g · quantized_g over one weight row's groups, 16 at a time: the offset
 * meets the same rounded x as the products (so that their rounding errors meet centred values), the zero the
 * exact sums. */
static inline float row_offsets_int8(const void *scales, const void *zeros, int bf16, const float *exact_sums,
                                     const float *quantized_sums, int64_t groups) {
    __m512 sum = _mm512_setzero_ps();
    const __m512 offset = _mm512_set1_ps(INT4_OFFSET);
    int64_t g = 0;
    for (; g + 16 <= groups; g += 16) {
        const __m512 shifted = _mm512_mul_ps(_mm512_mul_ps(offset, load16(scales, g, bf16)), _mm512_loadu_ps(quantized_sums + g));
        sum = _mm512_add_ps(sum, _mm512_fmsub_ps(load16(zeros, g, bf16), _mm512_loadu_ps(exact_sums + g), shifted));
    }
    float tail = 0.0f;
    for (; g < groups; g++)
        tail += load_value(zeros, g, bf16) * exact_sums[g] - INT4_OFFSET * load_value(scales, g, bf16) * quantized_sums[g];
    return _mm512_reduce_add_ps(sum) + tail;
}

/* int4_rows with int8 activations (see quantize_groups). Returns 0, or -1 when out of memory. */
static int int4_rows_int8(const uint8_t *weight, const void *scales, const void *zeros, int scales_bf16,
                          const void *x, int x_bf16, void *out, int64_t rows, int64_t out_features,
                          int64_t in_features, int threads) {
    const int64_t groups = in_features / INT4_GROUP, half = in_features / 2;
    int8_t *planes = malloc(rows * in_features);
    float *sums = malloc(sizeof(float) * 3 * rows * groups);
    if (!planes || !sums) {
        free(planes), free(sums);
        return -1;
    }
    float *x_scales = sums, *quantized_sums = sums + rows * groups, *exact_sums = sums + 2 * rows * groups;
    quantize_groups(x, x_bf16, planes, x_scales, quantized_sums, exact_sums, rows * groups);
    const size_t scale_bytes = scales_bf16 ? sizeof(uint16_t) : sizeof(float);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < out_features; n++) {
        const uint8_t *w = weight + n * half;
        const void *row_scales = (const char *)scales + n * groups * scale_bytes;
        const void *row_zeros = (const char *)zeros + n * groups * scale_bytes;
        for (int64_t m = 0; m < rows; m++) {
            const int64_t at = m * groups;
            const float products = row_products_int8(w, row_scales, scales_bf16, planes + m * in_features,
                                                     x_scales + at, groups, m == 0);
            const float offsets = row_offsets_int8(row_scales, row_zeros, scales_bf16, exact_sums + at,
                                                   quantized_sums + at, groups);
            store_value(out, m * out_features + n, products + offsets, x_bf16);
        }
    }
    free(planes), free(sums);
    return 0;
}
#endif

/* 1 when int4_rows can round its input to int8 (built for a CPU with AVX512-VNNI), else 0. */
int int8_activations_built(void) {
#ifdef __AVX512VNNI__
    return 1;
#else
    return 0;
#endif
}

/* weight: uint8 (out, in / 2), two values a byte, the even input in the low nibble; scales, zeros:
 * (out, in / 128). A group's sum is scale · Σ q·x + (zero - 8 · scale) · Σ x. With `int8_activations`
 * (where the CPU has AVX512-VNNI; elsewhere ignored) x is first rounded to int8 a group at a time
 * (int4_rows_int8). Returns 0, or -1 when out of memory. */
int int4_rows(const uint8_t *weight, const void *scales, const void *zeros, int scales_bf16, const void *x,
              int x_bf16, void *out, int64_t rows, int64_t out_features, int64_t in_features, int int8_activations,
              int threads) {
#ifdef __AVX512VNNI__
    if (int8_activations)
        return int4_rows_int8(weight, scales, zeros, scales_bf16, x, x_bf16, out, rows, out_features, in_features,
                              threads);
#endif
    (void)int8_activations;
    const int64_t groups = in_features / INT4_GROUP, half = in_features / 2;
#ifdef __AVX512BF16__
    const int use_bf16 = x_bf16;
#else
    const int use_bf16 = 0;
#endif
    /* x rearranged once (bf16 planes where bf16 products run, else fp32 even and odd halves) and its group sums;
     * with bf16 products the stored values are 128 + q, so 128 more of each group's sum comes off. */
    void *split = malloc((use_bf16 ? sizeof(uint16_t) : sizeof(float)) * rows * in_features);
    float *group_sums = malloc(sizeof(float) * rows * groups);
    if (!split || !group_sums) {
        free(split), free(group_sums);
        return -1;
    }
    const float *even = split, *odd = even + rows * half;
#ifdef __AVX512BF16__
    const uint16_t *planes = split;
    if (use_bf16) split_planes((const uint16_t *)x, split, rows * groups);
#endif
    if (!use_bf16)
        for (int64_t i = 0; i < rows * half; i++) {
            ((float *)split)[i] = load_value(x, 2 * i, x_bf16);
            ((float *)split)[rows * half + i] = load_value(x, 2 * i + 1, x_bf16);
        }
    const float stored_offset = use_bf16 ? INT4_OFFSET + 128 : INT4_OFFSET;
    const size_t scale_bytes = scales_bf16 ? sizeof(uint16_t) : sizeof(float);
    for (int64_t i = 0; i < rows * groups; i++) {
        __m512 sum = _mm512_setzero_ps();
        for (int k = 0; k < INT4_GROUP; k += 16) sum = _mm512_add_ps(sum, load16(x, i * INT4_GROUP + k, x_bf16));
        group_sums[i] = _mm512_reduce_add_ps(sum);
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < out_features; n++) {
        const uint8_t *w = weight + n * half;
        const void *row_scales = (const char *)scales + n * groups * scale_bytes;
        const void *row_zeros = (const char *)zeros + n * groups * scale_bytes;
        for (int64_t m = 0; m < rows; m++) {
            float products;
#ifdef __AVX512BF16__
            if (use_bf16)
                products = row_products_bf16(w, row_scales, scales_bf16, planes + m * in_features, groups, m == 0);
            else
#endif
                products = row_products_fp32(w, row_scales, scales_bf16, even + m * half, odd + m * half, groups, m == 0);
            const float offsets = row_offsets(row_scales, row_zeros, scales_bf16, group_sums + m * groups, groups,
                                              stored_offset);
            store_value(out, m * out_features + n, products + offsets, x_bf16);
        }
    }
    free(split), free(group_sums);
    return 0;
}

/* One row times a bf16 (out, in) weight, in % 32 == 0 (the plain linear layers' decode step: the bf16 LM head
 * and, in a bf16 decoder, every layer). With AVX512-BF16, vdpbf16ps multiplies 32 bf16 pairs an instruction;
 * without, each weight widens to fp32 (a shift) for an FMA. Returns 0, or -1 for a width it cannot take. */
int bf16_row(const uint16_t *weight, const uint16_t *x, uint16_t *out, int64_t out_features, int64_t in_features,
             int threads) {
    if (in_features % 32) return -1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < out_features; n++) {
        const uint16_t *w = weight + n * in_features;
        __m512 acc[4];
        for (int j = 0; j < 4; j++) acc[j] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 128 <= in_features; k += 128) {
            for (int line = 0; line < 4; line++) prefetch_line(w + k + PREFETCH_AHEAD / 2 + 32 * line);
            for (int j = 0; j < 4; j++) {
                __m512i weights = _mm512_loadu_si512(w + k + 32 * j), inputs = _mm512_loadu_si512(x + k + 32 * j);
#ifdef __AVX512BF16__
                acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)weights, (__m512bh)inputs);
#else
                /* bf16 → fp32 is the bits moved up 16: the even elements by a shift, the odd ones by a mask. */
                const __m512i high = _mm512_set1_epi32((int)0xFFFF0000);
                acc[j] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(weights, 16)),
                                         _mm512_castsi512_ps(_mm512_slli_epi32(inputs, 16)), acc[j]);
                acc[j] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(weights, high)),
                                         _mm512_castsi512_ps(_mm512_and_si512(inputs, high)), acc[j]);
#endif
            }
        }
        float tail = 0.0f;
        for (; k < in_features; k++) tail += bf16_to_float(w[k]) * bf16_to_float(x[k]);
        out[n] = float_to_bf16(sum_lanes(acc, 4) + tail);
    }
    return 0;
}

/* A prefill's int4 weight dequantised whole (then the dtype's GEMM): out[n, k] = (q − 8) · scale + zero, summed
 * in fp32 and rounded once to out's dtype, rows in parallel. Same layout as int4_rows. */
int int4_dequantize(const uint8_t *weight, const void *scales, const void *zeros, int scales_bf16, void *out,
                    int out_bf16, int64_t out_features, int64_t in_features, int threads) {
    const int64_t groups = in_features / INT4_GROUP, half = in_features / 2;
    const __m512i nibble = _mm512_set1_epi32(0x0F);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < out_features; n++) {
        for (int64_t g = 0; g < groups; g++) {
            const float scale = load_value(scales, n * groups + g, scales_bf16);
            const __m512 step = _mm512_set1_ps(scale);
            const __m512 offset = _mm512_set1_ps(load_value(zeros, n * groups + g, scales_bf16) - INT4_OFFSET * scale);
            const uint8_t *group = weight + n * half + g * (INT4_GROUP / 2);
            for (int c = 0; c < 4; c++) { /* 16 bytes: 32 values */
                __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(group + 16 * c)));
                /* a byte's two values side by side as 16-bit lanes: the even input, then the odd */
                __m512i pairs = _mm512_or_si512(_mm512_and_si512(bytes, nibble),
                                                _mm512_slli_epi32(_mm512_srli_epi32(bytes, 4), 16));
                __m512 first = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(pairs)));
                __m512 second = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(pairs, 1)));
                first = _mm512_fmadd_ps(first, step, offset);
                second = _mm512_fmadd_ps(second, step, offset);
                const int64_t at = n * in_features + g * INT4_GROUP + 32 * c;
                if (!out_bf16) {
                    _mm512_storeu_ps((float *)out + at, first);
                    _mm512_storeu_ps((float *)out + at + 16, second);
                    continue;
                }
#ifdef __AVX512BF16__
                _mm256_storeu_si256((__m256i *)((uint16_t *)out + at), (__m256i)_mm512_cvtneps_pbh(first));
                _mm256_storeu_si256((__m256i *)((uint16_t *)out + at + 16), (__m256i)_mm512_cvtneps_pbh(second));
#else
                float values[32];
                _mm512_storeu_ps(values, first);
                _mm512_storeu_ps(values + 16, second);
                for (int i = 0; i < 32; i++) ((uint16_t *)out)[at + i] = float_to_bf16(values[i]);
#endif
            }
        }
    }
    return 0;
}

/* A decode step's attention, one query position a row of the batch (decode_attention.py calls these two around a
 * softmax). Keys and values are the cache's (batch, kv heads, positions, head_dim) views: rows contiguous, batch
 * and head strides given (a growing cache's buffer is longer than its positions). Query head h reads KV head
 * h / group. Everything is summed in fp32; bf16 values widen exactly. head_dim % 16 == 0. */

#define LOGIT_HEADS 8 /* query heads a pass over a key row: their sums in registers */

/* 16 fp32 values rounded to bf16 (to nearest, ties to even, NaN kept: float_to_bf16's rule, 16 at a time), each
 * in the low half of a 32-bit lane. */
static inline __m512i bf16_lanes(__m512 v) {
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb)), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40)));
}

/* 16 fp32 values stored from `index` of a bf16 (rounded as `bf16_lanes`) or fp32 row. */
static inline void store16(void *values, int64_t index, __m512 v, int bf16) {
    if (!bf16) {
        _mm512_storeu_ps((float *)values + index, v);
        return;
    }
    _mm256_storeu_si256((__m256i *)((uint16_t *)values + index), _mm512_cvtepi32_epi16(bf16_lanes(v)));
}

/* A prefill's int8 weight dequantised whole: out[n, k] = q · scale[n], in fp32 (exact: 7 bits times 8) and
 * rounded once to the scales' dtype, as torch's promoted product; rows in parallel. in_features % 16 == 0. */
int int8_dequantize(const int8_t *weight, const void *scales, int bf16, void *out, int64_t out_features,
                    int64_t in_features, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < out_features; n++) {
        const __m512 scale = _mm512_set1_ps(load_value(scales, n, bf16));
        const int8_t *row = weight + n * in_features;
        for (int64_t k = 0; k < in_features; k += 16) {
            const __m512 values = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + k))));
            store16(out, n * in_features + k, _mm512_mul_ps(values, scale), bf16);
        }
    }
    return 0;
}

/* logits[b, h, s] = scale · q[b, h] · k[b, h / group, s]: q (batch, heads, head_dim) contiguous. The positions are
 * split between the threads. Returns 0, or -1 when out of memory. */
int attention_logits(const void *q, const void *k, float *logits, int bf16, int64_t batch, int64_t heads,
                     int64_t kv_heads, int64_t length, int64_t head_dim, int64_t k_batch_stride,
                     int64_t k_head_stride, float scale, int threads) {
    const int64_t group = heads / kv_heads, vectors = head_dim / 16;
    float *q32 = malloc(sizeof(float) * batch * heads * head_dim);
    if (!q32) return -1;
    for (int64_t i = 0; i < batch * heads * head_dim; i++) q32[i] = load_value(q, i, bf16) * scale;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t s = 0; s < length; s++) {
        for (int64_t b = 0; b < batch; b++)
            for (int64_t kv = 0; kv < kv_heads; kv++) {
                const int64_t at = b * k_batch_stride + kv * k_head_stride + s * head_dim;
                if (bf16) prefetch_line((const uint16_t *)k + at + 4 * head_dim);
                for (int64_t g0 = 0; g0 < group; g0 += LOGIT_HEADS) { /* each key vector widened once */
                    const int64_t heads_here = group - g0 < LOGIT_HEADS ? group - g0 : LOGIT_HEADS;
                    const float *query = q32 + (b * heads + kv * group + g0) * head_dim;
                    __m512 acc[LOGIT_HEADS];
                    for (int g = 0; g < LOGIT_HEADS; g++) acc[g] = _mm512_setzero_ps();
                    for (int64_t j = 0; j < vectors; j++) {
                        const __m512 keys = load16(k, at + 16 * j, bf16);
                        for (int g = 0; g < heads_here; g++)
                            acc[g] = _mm512_fmadd_ps(keys, _mm512_loadu_ps(query + g * head_dim + 16 * j), acc[g]);
                    }
                    for (int g = 0; g < heads_here; g++)
                        logits[(b * heads + kv * group + g0 + g) * length + s] = _mm512_reduce_add_ps(acc[g]);
                }
            }
    }
    free(q32);
    return 0;
}

#define VALUE_TILE 32 /* positions a pass over one block of head_dim: their rows stay in L1 between the blocks */
#define VALUE_BLOCK 4 /* vectors of 16 values a pass: with up to 4 query heads a KV head, 16 sums in registers */

/* out[b, h] = Σ_s weights[b, h, s] · v[b, h / group, s], weights fp32 (batch, heads, length); out (batch, heads,
 * head_dim) in the values' dtype. The positions are split between the threads, each summing its share into its
 * own fp32 rows, added together at the end; within a share, a tile of positions at a time, one block of head_dim
 * at a time, the sums in registers. Returns 0, or -1 when out of memory. */
int attention_values(const float *weights, const void *v, void *out, int bf16, int64_t batch, int64_t heads,
                     int64_t kv_heads, int64_t length, int64_t head_dim, int64_t v_batch_stride,
                     int64_t v_head_stride, int threads) {
    const int64_t group = heads / kv_heads, vectors = head_dim / 16, width = batch * heads * head_dim;
    float *partial = calloc((size_t)threads * width, sizeof(float));
    if (!partial) return -1;
#pragma omp parallel num_threads(threads)
    {
        const int thread = omp_get_thread_num(), count = omp_get_num_threads();
        float *sums = partial + thread * width;
        const int64_t first = length * thread / count, last = length * (thread + 1) / count;
        for (int64_t b = 0; b < batch; b++)
            for (int64_t kv = 0; kv < kv_heads; kv++)
                for (int64_t tile = first; tile < last; tile += VALUE_TILE) {
                    const int64_t end = tile + VALUE_TILE < last ? tile + VALUE_TILE : last;
                    const float *w = weights + (b * heads + kv * group) * length;
                    for (int64_t j0 = 0; j0 < vectors; j0 += VALUE_BLOCK)
                        for (int64_t g0 = 0; g0 < group; g0 += 4) {
                            const int64_t block = vectors - j0 < VALUE_BLOCK ? vectors - j0 : VALUE_BLOCK;
                            const int64_t heads_here = group - g0 < 4 ? group - g0 : 4;
                            __m512 acc[4][VALUE_BLOCK];
                            for (int g = 0; g < 4; g++)
                                for (int j = 0; j < VALUE_BLOCK; j++) acc[g][j] = _mm512_setzero_ps();
                            for (int64_t s = tile; s < end; s++) {
                                const int64_t at = b * v_batch_stride + kv * v_head_stride + s * head_dim + 16 * j0;
                                for (int j = 0; j < block; j++) {
                                    const __m512 values = load16(v, at + 16 * j, bf16);
                                    for (int g = 0; g < heads_here; g++)
                                        acc[g][j] = _mm512_fmadd_ps(_mm512_set1_ps(w[(g0 + g) * length + s]), values,
                                                                    acc[g][j]);
                                }
                            }
                            for (int g = 0; g < heads_here; g++)
                                for (int j = 0; j < block; j++) {
                                    float *sum = sums + (b * heads + kv * group + g0 + g) * head_dim + 16 * (j0 + j);
                                    _mm512_storeu_ps(sum, _mm512_add_ps(_mm512_loadu_ps(sum), acc[g][j]));
                                }
                        }
                }
    }
    for (int64_t i = 0; i < width; i++) {
        float total = 0.0f;
        for (int t = 0; t < threads; t++) total += partial[t * width + i];
        store_value(out, i, total, bf16);
    }
    free(partial);
    return 0;
}

/* (mean(x²) + eps)^-½ over the `width` values of x from `at` (width % 16 == 0). */
static inline float inverse_rms(const void *x, int64_t at, int64_t width, float eps, int bf16) {
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t j = 0; j < width / 16; j++) {
        const __m512 v = load16(x, at + 16 * j, bf16);
        acc[j & 1] = _mm512_fmadd_ps(v, v, acc[j & 1]);
    }
    return 1.0f / __builtin_sqrtf(sum_lanes(acc, 2) / (float)width + eps);
}

/* Values 16j .. 16j + 15 of the row from `at`, normed: x · factor, then · weight (NULL: no scale), in fp32. */
static inline __m512 normed16(const void *x, int64_t at, int64_t j, __m512 factor, const float *weight, int bf16) {
    const __m512 v = _mm512_mul_ps(load16(x, at + 16 * j, bf16), factor);
    return weight ? _mm512_mul_ps(v, _mm512_loadu_ps(weight + 16 * j)) : v;
}

/* Gemma-3n's RMSNorm over rows of `width` (width % 16 == 0), as its module computes it in fp32:
 * out = x · (mean(x²) + eps)^-½ · weight, the two products rounded in fp32 one after the other (the module's
 * order), then once to x's dtype; weight fp32 (width,) or NULL (no scale). Rows in parallel. */
int rms_norm(const void *x, const float *weight, void *out, int bf16, int64_t rows, int64_t width, float eps,
             int threads) {
    const int64_t vectors = width / 16;
#pragma omp parallel for num_threads(threads) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t at = r * width;
        const __m512 factor = _mm512_set1_ps(inverse_rms(x, at, width, eps, bf16));
        for (int64_t j = 0; j < vectors; j++) store16(out, at + 16 * j, normed16(x, at, j, factor, weight, bf16), bf16);
    }
    return 0;
}

/* AltUp a position a row (a decode step's one, or a prompt's; altup_predict.py calls these). streams: (n, rows,
 * width), the n ≤ ALTUP_STREAMS streams of each row; the router reads one stream (or the layer's output) a row:
 * modality k = tanh(router[k] · (rmsnorm(x) · norm_weight · input_scale)). All in fp32, rounded once at the end to
 * the streams' dtype (the library rounds to it after each step). Rows in parallel. width % 16 == 0. */
#define ALTUP_STREAMS 8

static void altup_modalities(const void *x, int64_t at, const float *norm_weight, float eps, float input_scale,
                             const void *router, int n, int64_t width, int bf16, float *modalities) {
    const int64_t vectors = width / 16;
    __m512 squares = _mm512_setzero_ps();
    for (int64_t j = 0; j < vectors; j++) {
        const __m512 v = load16(x, at + 16 * j, bf16);
        squares = _mm512_fmadd_ps(v, v, squares);
    }
    const float factor = input_scale / __builtin_sqrtf(_mm512_reduce_add_ps(squares) / (float)width + eps);
    __m512 sums[ALTUP_STREAMS];
    for (int k = 0; k < n; k++) sums[k] = _mm512_setzero_ps();
    for (int64_t j = 0; j < vectors; j++) {
        const __m512 normed = _mm512_mul_ps(load16(x, at + 16 * j, bf16), _mm512_loadu_ps(norm_weight + 16 * j));
        for (int k = 0; k < n; k++) sums[k] = _mm512_fmadd_ps(normed, load16(router, k * width + 16 * j, bf16), sums[k]);
    }
    for (int k = 0; k < n; k++) modalities[k] = tanhf(_mm512_reduce_add_ps(sums[k]) * factor);
}

/* coefficients[j] = Σ_k weight[j, k] · modalities[k] (+ offset), weight (count, n) in the streams' dtype. */
static void altup_coefficients(const void *weight, const float *modalities, int n, int count, float offset,
                               int bf16, float *coefficients) {
    for (int j = 0; j < count; j++) {
        float sum = 0.0f;
        for (int k = 0; k < n; k++) sum += load_value(weight, j * n + k, bf16) * modalities[k];
        coefficients[j] = sum + offset;
    }
}

/* The prediction: out[c] = streams[c] + Σ_a coefs[c · n + a] · streams[a], coefs from prediction_weight (n², n)
 * over the modalities of stream `active`. Returns 0, or -1 for more streams than it takes. */
int altup_predict(const void *streams, int active, const float *norm_weight, float eps, float input_scale,
                  const void *router, const void *prediction_weight, void *out, int bf16, int n, int64_t rows,
                  int64_t width, int threads) {
    if (n > ALTUP_STREAMS) return -1;
#pragma omp parallel for num_threads(threads) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        float modalities[ALTUP_STREAMS], coefs[ALTUP_STREAMS * ALTUP_STREAMS];
        altup_modalities(streams, (active * rows + r) * width, norm_weight, eps, input_scale, router, n, width, bf16,
                         modalities);
        altup_coefficients(prediction_weight, modalities, n, n * n, 0.0f, bf16, coefs);
        for (int64_t h = 0; h < width; h += 16) {
            __m512 values[ALTUP_STREAMS];
            for (int a = 0; a < n; a++) values[a] = load16(streams, (a * rows + r) * width + h, bf16);
            for (int c = 0; c < n; c++) {
                __m512 mixed = values[c];
                for (int a = 0; a < n; a++) mixed = _mm512_fmadd_ps(_mm512_set1_ps(coefs[c * n + a]), values[a], mixed);
                store16(out, (c * rows + r) * width + h, mixed, bf16);
            }
        }
    }
    return 0;
}

/* The correction: out[c] = predictions[c] + (1 + coefs[c]) · (activated − predictions[active]), coefs from
 * correction_weight (n, n) over the modalities of `activated` (rows, width). Returns 0, or -1 for more streams
 * than it takes. */
int altup_correct(const void *predictions, const void *activated, int active, const float *norm_weight, float eps,
                  float input_scale, const void *router, const void *correction_weight, void *out, int bf16, int n,
                  int64_t rows, int64_t width, int threads) {
    if (n > ALTUP_STREAMS) return -1;
#pragma omp parallel for num_threads(threads) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        float modalities[ALTUP_STREAMS], coefs[ALTUP_STREAMS];
        altup_modalities(activated, r * width, norm_weight, eps, input_scale, router, n, width, bf16, modalities);
        altup_coefficients(correction_weight, modalities, n, n, 1.0f, bf16, coefs);
        for (int64_t h = 0; h < width; h += 16) {
            const __m512 innovation = _mm512_sub_ps(load16(activated, r * width + h, bf16),
                                                    load16(predictions, (active * rows + r) * width + h, bf16));
            for (int c = 0; c < n; c++) {
                const int64_t at = (c * rows + r) * width + h;
                store16(out, at, _mm512_fmadd_ps(_mm512_set1_ps(coefs[c]), innovation, load16(predictions, at, bf16)), bf16);
            }
        }
    }
    return 0;
}

/* The rest of a decoder layer's decode step (decode_layer.py): the element-wise work between its products, for one
 * position (a few thousand values: one thread). Each step rounds to the layer's dtype where one of the library's
 * torch operations would (a bf16 model's values are bf16 after every operation), so the layer's results are the
 * library's up to the order of sums and the last bit of exp. Widths % 16 == 0. */

/* v as the dtype holds it: rounded to bf16 and widened back, or unchanged (fp32). */
static inline __m512 rounded16(__m512 v, int bf16) {
    return bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(bf16_lanes(v), 16)) : v;
}

/* e^x in fp32, 16 at a time: x = n·ln 2 + r (ln 2 in two parts), e^r by its degree-7 Taylor-like polynomial (Cephes'
 * expf coefficients, ~1 ulp), scaled by 2^n; below -88 it is 0 (as good as, for the uses here), above 89 inf. */
static inline __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(89.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* GELU, tanh form (Gemma-3n's gelu_pytorch_tanh): ½x(1 + tanh u) = x / (1 + e^-2u), u = √(2/π)(x + 0.044715x³);
 * the second form has no cancellation where tanh u is near -1. */
static inline __m512 gelu_tanh16(__m512 x) {
    const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    const __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), cube, x));
    const __m512 e = exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* The attention's heads for one position, in place: each head of q and k RMS-normed with its weight (v without a
 * scale), rounded, then q and k rotated as transformers' apply_rotary_pos_emb: x·cos + rotate_half(x)·sin with
 * rotate_half(x) = (−x[D/2:], x[:D/2]), both products and the sum rounded. cos, sin: (head_dim,) in the dtype. k and
 * v NULL for a layer that reuses another's keys. head_dim % 32 == 0, at most ROPE_HEAD_DIM. Returns 0, or -1. */
#define ROPE_HEAD_DIM 1024

static void norm_and_rotate(void *heads, int64_t count, const float *weight, const void *cos, const void *sin,
                            int bf16, int64_t head_dim, float eps) {
    float normed[ROPE_HEAD_DIM];
    const int64_t half = head_dim / 2;
    for (int64_t h = 0; h < count; h++) {
        const int64_t at = h * head_dim;
        const __m512 factor = _mm512_set1_ps(inverse_rms(heads, at, head_dim, eps, bf16));
        for (int64_t j = 0; j < head_dim / 16; j++)
            _mm512_storeu_ps(normed + 16 * j, rounded16(normed16(heads, at, j, factor, weight, bf16), bf16));
        if (!cos) {
            for (int64_t j = 0; j < head_dim; j += 16) store16(heads, at + j, _mm512_loadu_ps(normed + j), bf16);
            continue;
        }
        for (int64_t j = 0; j < head_dim; j += 16) {
            const __m512 x = _mm512_loadu_ps(normed + j);
            const __m512 other = _mm512_loadu_ps(normed + (j < half ? j + half : j - half));
            const __m512 rotated = j < half ? _mm512_sub_ps(_mm512_setzero_ps(), other) : other;
            const __m512 a = rounded16(_mm512_mul_ps(x, load16(cos, j, bf16)), bf16);
            const __m512 b = rounded16(_mm512_mul_ps(rotated, load16(sin, j, bf16)), bf16);
            store16(heads, at + j, _mm512_add_ps(a, b), bf16);
        }
    }
}

int attention_heads(void *q, void *k, void *v, const float *q_weight, const float *k_weight, const void *cos,
                    const void *sin, int bf16, int64_t heads, int64_t kv_heads, int64_t head_dim, float eps) {
    if (head_dim > ROPE_HEAD_DIM || head_dim % 32) return -1;
    norm_and_rotate(q, heads, q_weight, cos, sin, bf16, head_dim, eps);
    if (k) norm_and_rotate(k, kv_heads, k_weight, cos, sin, bf16, head_dim, eps);
    if (v) norm_and_rotate(v, kv_heads, NULL, NULL, NULL, bf16, head_dim, eps);
    return 0;
}

/* Between a layer's attention and its MLP (Gemma3nTextDecoderLayer's forward), each line rounded as the library's:
 *   laurel    = normed + norm(laurel_right, laurel_weight)     (LAuReL's output)
 *   gated     = active + norm(attention, attention_weight)
 *   residual  = (gated + laurel) / √2,     mlp_input = norm(residual, mlp_weight) */
void attention_residual(const void *active, const void *normed, const void *laurel_right, const void *attention,
                        const float *laurel_weight, const float *attention_weight, const float *mlp_weight,
                        void *residual, void *mlp_input, int bf16, int64_t width, float eps) {
    const __m512 laurel_factor = _mm512_set1_ps(inverse_rms(laurel_right, 0, width, eps, bf16));
    const __m512 attention_factor = _mm512_set1_ps(inverse_rms(attention, 0, width, eps, bf16));
    const __m512 root2 = _mm512_set1_ps(1.41421356237309515f);
    for (int64_t j = 0; j < width / 16; j++) {
        const __m512 laurel = rounded16(_mm512_add_ps(load16(normed, 16 * j, bf16),
            rounded16(normed16(laurel_right, 0, j, laurel_factor, laurel_weight, bf16), bf16)), bf16);
        const __m512 gated = rounded16(_mm512_add_ps(load16(active, 16 * j, bf16),
            rounded16(normed16(attention, 0, j, attention_factor, attention_weight, bf16), bf16)), bf16);
        store16(residual, 16 * j, _mm512_div_ps(rounded16(_mm512_add_ps(gated, laurel), bf16), root2), bf16);
    }
    rms_norm(residual, mlp_weight, mlp_input, bf16, 1, width, eps, 1);
}

/* out = gelu_tanh(gate′) · up, rounded after each, with gate′ = gate or, with Gemma-3n's activation sparsity
 * (`sparse`), relu(gate − cutoff): cutoff = mean + std · multiplier over the row (population std; the mean and the
 * std rounded, the multiplier as the dtype holds it). The MLP's activation, and the per-layer input's gate (up = the
 * layer's per-layer input). */
void gated_activation(const void *gate, const void *up, void *out, int bf16, int64_t width, float multiplier,
                      int sparse) {
    __m512 cutoff = _mm512_setzero_ps();
    if (sparse) {
        __m512 sum = _mm512_setzero_ps(), squares = _mm512_setzero_ps();
        for (int64_t j = 0; j < width; j += 16) sum = _mm512_add_ps(sum, load16(gate, j, bf16));
        const float mean = _mm512_reduce_add_ps(sum) / (float)width;
        for (int64_t j = 0; j < width; j += 16) {
            const __m512 d = _mm512_sub_ps(load16(gate, j, bf16), _mm512_set1_ps(mean));
            squares = _mm512_fmadd_ps(d, d, squares);
        }
        const __m512 std = rounded16(_mm512_set1_ps(__builtin_sqrtf(_mm512_reduce_add_ps(squares) / (float)width)), bf16);
        const __m512 scaled = rounded16(_mm512_mul_ps(std, _mm512_set1_ps(multiplier)), bf16);
        cutoff = rounded16(_mm512_add_ps(rounded16(_mm512_set1_ps(mean), bf16), scaled), bf16);
    }
    for (int64_t j = 0; j < width; j += 16) {
        __m512 g = load16(gate, j, bf16);
        if (sparse) g = _mm512_max_ps(rounded16(_mm512_sub_ps(g, cutoff), bf16), _mm512_setzero_ps());
        store16(out, j, _mm512_mul_ps(rounded16(gelu_tanh16(g), bf16), load16(up, j, bf16)), bf16);
    }
}

/* gated_activation over `rows` rows of `width`, one after another (a prompt's MLP, eager), rows in parallel; out
 * may be gate. Returns 0. */
int gated_activation_rows(const void *gate, const void *up, void *out, int bf16, int64_t rows, int64_t width,
                          float multiplier, int sparse, int threads) {
    const int64_t bytes = bf16 ? (int64_t)sizeof(uint16_t) : (int64_t)sizeof(float);
#pragma omp parallel for num_threads(threads) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; r++)
        gated_activation((const char *)gate + r * width * bytes, (const char *)up + r * width * bytes,
                         (char *)out + r * width * bytes, bf16, width, multiplier, sparse);
    return 0;
}

/* out[c] = residual[c] + norm(x, weight) for `count` rows of `width` after one another (the norm rounded, then
 * each sum); out may be residual. */
static void norm_add_strided(const void *x, const float *weight, const void *residual, void *out, int bf16,
                             int64_t count, int64_t stride, int64_t width, float eps) {
    const __m512 factor = _mm512_set1_ps(inverse_rms(x, 0, width, eps, bf16));
    for (int64_t j = 0; j < width / 16; j++) {
        const __m512 normed = rounded16(normed16(x, 0, j, factor, weight, bf16), bf16);
        for (int64_t c = 0; c < count; c++)
            store16(out, c * stride + 16 * j, _mm512_add_ps(load16(residual, c * stride + 16 * j, bf16), normed), bf16);
    }
}

void norm_add(const void *x, const float *weight, const void *residual, void *out, int bf16, int64_t count,
              int64_t width, float eps) {
    norm_add_strided(x, weight, residual, out, bf16, count, width, width, eps);
}

/* out = x · scale, element by element, rounded (AltUp's scale of its corrected output). */
void scaled_row(const void *x, const void *scale, void *out, int bf16, int64_t width) {
    for (int64_t j = 0; j < width; j += 16)
        store16(out, j, _mm512_mul_ps(load16(x, j, bf16), load16(scale, j, bf16)), bf16);
}

/* A prompt's rows (eager; prompt_layer.py): the three calls above for each of `rows` rows of `width`, the rows
 * split between the threads. norm_add_rows' copies of a row are AltUp's streams: copy c of row r at (c · rows + r)
 * · width. Each returns 0. */
#define ROW_AT(pointer, r) ((const char *)(pointer) + (r) * width * bytes)
int attention_residual_rows(const void *active, const void *normed, const void *laurel_right, const void *attention,
                            const float *laurel_weight, const float *attention_weight, const float *mlp_weight,
                            void *residual, void *mlp_input, int bf16, int64_t rows, int64_t width, float eps,
                            int threads) {
    const int64_t bytes = bf16 ? (int64_t)sizeof(uint16_t) : (int64_t)sizeof(float);
#pragma omp parallel for num_threads(threads) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; r++)
        attention_residual(ROW_AT(active, r), ROW_AT(normed, r), ROW_AT(laurel_right, r), ROW_AT(attention, r),
                           laurel_weight, attention_weight, mlp_weight, (void *)ROW_AT(residual, r),
                           (void *)ROW_AT(mlp_input, r), bf16, width, eps);
    return 0;
}

int norm_add_rows(const void *x, const float *weight, const void *residual, void *out, int bf16, int64_t rows,
                  int64_t count, int64_t width, float eps, int threads) {
    const int64_t bytes = bf16 ? (int64_t)sizeof(uint16_t) : (int64_t)sizeof(float);
#pragma omp parallel for num_threads(threads) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; r++)
        norm_add_strided(ROW_AT(x, r), weight, ROW_AT(residual, r), (void *)ROW_AT(out, r), bf16, count, rows * width,
                         width, eps);
    return 0;
}

int scaled_rows(const void *x, const void *scale, void *out, int bf16, int64_t rows, int64_t width, int threads) {
    const int64_t bytes = bf16 ? (int64_t)sizeof(uint16_t) : (int64_t)sizeof(float);
#pragma omp parallel for num_threads(threads) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; r++) scaled_row(ROW_AT(x, r), scale, (void *)ROW_AT(out, r), bf16, width);
    return 0;
}
#undef ROW_AT
