// kernels/rope_tables.c: cos/sin tables for rotary position embeddings (RoPE).
//
// Host-side helper shared by every backend: the model fills the tables once at start-up
// and copies them to the backend. Layout is Hugging Face's "rotate_half": element i of
// a head (i < HS/2) is paired with element i + HS/2 and both are rotated by the angle
// pos * inv_freq[i], with inv_freq[i] = theta^(-2i/HS).
//
// Llama 3 rescales the frequencies by wavelength, exactly as Hugging Face transformers'
// `_compute_llama3_parameters`: long wavelengths (low frequencies, beyond the original
// context) are divided by `factor`, short ones are kept, and the band in between is
// interpolated smoothly. Everything is computed in double and rounded to float once at
// the end, so the tables do not depend on the order of float operations.
#include <math.h>

#include "kernels/ops.h"

// Llama-3 wavelength-dependent scaling of one inverse frequency.
static double rope_llama3_scale(double inv_freq, const rope_params *p) {
    double factor = p->factor;
    double low_freq_factor = p->low_freq_factor;
    double high_freq_factor = p->high_freq_factor;
    double old_context_len = p->original_max_pos;
    double low_freq_wavelen = old_context_len / low_freq_factor;
    double high_freq_wavelen = old_context_len / high_freq_factor;
    double wavelen = 2.0 * M_PI / inv_freq;
    if (wavelen > low_freq_wavelen) {
        return inv_freq / factor;                  // low frequency: fully rescaled
    }
    if (wavelen < high_freq_wavelen) {
        return inv_freq;                           // high frequency: untouched
    }
    double smooth = (old_context_len / wavelen - low_freq_factor)
                  / (high_freq_factor - low_freq_factor);
    return (1.0 - smooth) * inv_freq / factor + smooth * inv_freq;
}

void rope_tables_fill(float *cos_tab, float *sin_tab, int maxT, int HS, const rope_params *p) {
    // cos_tab, sin_tab (maxT, HS/2)
    int half = HS / 2;
    for (int i = 0; i < half; i++) {
        double inv_freq = pow((double)p->theta, -2.0 * i / (double)HS);
        if (p->scaling_llama3) inv_freq = rope_llama3_scale(inv_freq, p);
        for (int t = 0; t < maxT; t++) {
            double angle = (double)t * inv_freq;
            cos_tab[(size_t)t * half + i] = (float)cos(angle);
            sin_tab[(size_t)t * half + i] = (float)sin(angle);
        }
    }
}
