// RWKV-7 "wkv" recurrence for CPU training: forward and exact backward.
//
// Written for Quill's training script (models/train/train.py).
//
// Per (batch, head), with state S of shape [value i][key j] (N x N):
//   sa_t[i] = sum_j S[i][j] * a_t[j]
//   S[i][j] = S[i][j] * w_t[j] + sa_t[i] * b_t[j] + v_t[i] * k_t[j]
//   y_t[i]  = sum_j S[i][j] * r_t[j]
// RWKV-7 uses a = -kk and b = kk * a_gate (see train.py).
//
// Tensors r, w, k, v, a, b, y: (B, T, H, N) contiguous; s0, sT: (B, H, N, N).
// The forward stores the state at the start of every CHUNK-step chunk; the
// backward recomputes the states inside a chunk from that checkpoint and
// walks back in time. Everything is plain loops, parallel over B*H.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <type_traits>
#include <vector>

static const int64_t CHUNK = 16;

// NT > 0: head size known at compile time (lets the compiler unroll and
// vectorise the j loops); NT == 0: runtime N.
template <typename scalar_t, int NT>
static inline void step_forward(const scalar_t* __restrict__ r, const scalar_t* __restrict__ w,
                                const scalar_t* __restrict__ k, const scalar_t* __restrict__ v,
                                const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                                scalar_t* __restrict__ S, scalar_t* sa_out, scalar_t* y,
                                int64_t N_) {
    const int64_t N = NT > 0 ? NT : N_;
    for (int64_t i = 0; i < N; i++) {
        scalar_t* Si = S + i * N;
        scalar_t sa = 0;
        for (int64_t j = 0; j < N; j++) sa += Si[j] * a[j];
        if (sa_out) sa_out[i] = sa;
        const scalar_t vi = v[i];
        scalar_t acc = 0;
        for (int64_t j = 0; j < N; j++) {
            const scalar_t s = Si[j] * w[j] + sa * b[j] + vi * k[j];
            Si[j] = s;
            acc += s * r[j];
        }
        if (y) y[i] = acc;
    }
}

// One row i of the backward step (see wkv7_backward). A separate function so
// that GCC honours the __restrict__ qualifiers and vectorises the j loops.
template <typename scalar_t, int NT>
static inline scalar_t backward_row(
    scalar_t* __restrict__ dSi, const scalar_t* __restrict__ Si, const scalar_t* __restrict__ Pi,
    const scalar_t dyi, const scalar_t vi, const scalar_t sai, const scalar_t* __restrict__ r,
    const scalar_t* __restrict__ k, const scalar_t* __restrict__ w, const scalar_t* __restrict__ a,
    const scalar_t* __restrict__ b, scalar_t* __restrict__ adr, scalar_t* __restrict__ adk,
    scalar_t* __restrict__ adb, scalar_t* __restrict__ adw, scalar_t* __restrict__ ada,
    int64_t N_) {
    const int64_t N = NT > 0 ? NT : N_;
    for (int64_t j = 0; j < N; j++) dSi[j] += dyi * r[j];
    scalar_t dvi = 0, dsbi = 0;
    for (int64_t j = 0; j < N; j++) {
        dvi += dSi[j] * k[j];
        dsbi += dSi[j] * b[j];
    }
    for (int64_t j = 0; j < N; j++) {
        const scalar_t g = dSi[j];
        adr[j] += Si[j] * dyi;
        adk[j] += g * vi;
        adb[j] += g * sai;
        adw[j] += Pi[j] * g;
        ada[j] += Pi[j] * dsbi;
        dSi[j] = g * w[j] + dsbi * a[j];
    }
    return dvi;
}

std::vector<torch::Tensor> wkv7_forward(torch::Tensor r, torch::Tensor w, torch::Tensor k,
                                        torch::Tensor v, torch::Tensor a, torch::Tensor b,
                                        torch::Tensor s0, bool save_checkpoints) {
    TORCH_CHECK(r.dim() == 4, "r must be (B,T,H,N)");
    for (auto* t : {&r, &w, &k, &v, &a, &b, &s0}) {
        TORCH_CHECK(t->is_contiguous(), "wkv7: inputs must be contiguous");
        TORCH_CHECK(t->scalar_type() == r.scalar_type(), "wkv7: dtype mismatch");
    }
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
    auto y = torch::empty_like(r);
    auto sT = s0.clone();
    const int64_t nck = (T + CHUNK - 1) / CHUNK;
    torch::Tensor ck = save_checkpoints ? torch::empty({B, H, nck, N, N}, r.options())
                                        : torch::empty({0}, r.options());
    AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "wkv7_forward", [&] {
        const scalar_t *pr = r.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>(),
                       *pk = k.data_ptr<scalar_t>(), *pv = v.data_ptr<scalar_t>(),
                       *pa = a.data_ptr<scalar_t>(), *pb = b.data_ptr<scalar_t>();
        scalar_t* py = y.data_ptr<scalar_t>();
        scalar_t* ps = sT.data_ptr<scalar_t>();
        scalar_t* pck = save_checkpoints ? ck.data_ptr<scalar_t>() : nullptr;
        auto run = [&](auto nt_tag) {
            constexpr int NT = decltype(nt_tag)::value;
            at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
                for (int64_t bh = begin; bh < end; bh++) {
                    const int64_t bb = bh / H, hh = bh % H;
                    scalar_t* S = ps + bh * N * N;
                    for (int64_t t = 0; t < T; t++) {
                        if (pck && t % CHUNK == 0)
                            std::copy(S, S + N * N, pck + (bh * nck + t / CHUNK) * N * N);
                        const int64_t off = ((bb * T + t) * H + hh) * N;
                        step_forward<scalar_t, NT>(pr + off, pw + off, pk + off, pv + off,
                                                   pa + off, pb + off, S, nullptr, py + off, N);
                    }
                }
            });
        };
        if (N == 64) run(std::integral_constant<int, 64>{});
        else run(std::integral_constant<int, 0>{});
    });
    return {y, sT, ck};
}

// Returns dr, dw, dk, dv, da, db, ds0.
std::vector<torch::Tensor> wkv7_backward(torch::Tensor r, torch::Tensor w, torch::Tensor k,
                                         torch::Tensor v, torch::Tensor a, torch::Tensor b,
                                         torch::Tensor ck, torch::Tensor dy, torch::Tensor dsT) {
    const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
    const int64_t nck = (T + CHUNK - 1) / CHUNK;
    dy = dy.contiguous();
    auto dr = torch::empty_like(r), dw = torch::empty_like(w), dk = torch::empty_like(k),
         dv = torch::empty_like(v), da = torch::empty_like(a), db = torch::empty_like(b);
    auto ds0 = dsT.contiguous().clone();
    AT_DISPATCH_FLOATING_TYPES(r.scalar_type(), "wkv7_backward", [&] {
        const scalar_t *pr = r.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>(),
                       *pk = k.data_ptr<scalar_t>(), *pv = v.data_ptr<scalar_t>(),
                       *pa = a.data_ptr<scalar_t>(), *pb = b.data_ptr<scalar_t>(),
                       *pdy = dy.data_ptr<scalar_t>(), *pck = ck.data_ptr<scalar_t>();
        scalar_t *pdr = dr.data_ptr<scalar_t>(), *pdw = dw.data_ptr<scalar_t>(),
                 *pdk = dk.data_ptr<scalar_t>(), *pdv = dv.data_ptr<scalar_t>(),
                 *pda = da.data_ptr<scalar_t>(), *pdb = db.data_ptr<scalar_t>();
        scalar_t* pds = ds0.data_ptr<scalar_t>();
        const int64_t N_ = N;
        auto run = [&](auto nt_tag) {
            constexpr int NT = decltype(nt_tag)::value;
            at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
                // states[s] = state before step t0+s (s = 0..CHUNK), sa per step
                const int64_t N = NT > 0 ? NT : N_;
                // stride padded by 48 floats: avoids 4 KiB aliasing between consecutive states
                const int64_t SS = N * N + 48;
                std::vector<scalar_t> states((CHUNK + 1) * SS), sas(CHUNK * N);
                std::vector<scalar_t> acc_dr(N), acc_dk(N), acc_db(N), acc_dw(N), acc_da(N);
                for (int64_t bh = begin; bh < end; bh++) {
                    const int64_t bb = bh / H, hh = bh % H;
                    scalar_t* dS = pds + bh * N * N;
                    for (int64_t c = nck - 1; c >= 0; c--) {
                        const int64_t t0 = c * CHUNK, t1 = std::min(T, t0 + CHUNK);
                        const scalar_t* cks = pck + (bh * nck + c) * N * N;
                        std::copy(cks, cks + N * N, states.begin());
                        for (int64_t t = t0; t < t1; t++) {
                            const int64_t s = t - t0;
                            std::copy(states.begin() + s * SS, states.begin() + s * SS + N * N,
                                      states.begin() + (s + 1) * SS);
                            const int64_t off = ((bb * T + t) * H + hh) * N;
                            step_forward<scalar_t, NT>(pr + off, pw + off, pk + off, pv + off, pa + off,
                                                   pb + off, states.data() + (s + 1) * SS,
                                                   sas.data() + s * N, nullptr, N);
                        }
                        for (int64_t t = t1 - 1; t >= t0; t--) {
                            const int64_t s = t - t0;
                            const int64_t off = ((bb * T + t) * H + hh) * N;
                            const scalar_t *r_ = pr + off, *w_ = pw + off, *k_ = pk + off,
                                           *v_ = pv + off, *a_ = pa + off, *b_ = pb + off,
                                           *dy_ = pdy + off;
                            const scalar_t* Scur = states.data() + (s + 1) * SS;
                            const scalar_t* Sprev = states.data() + s * SS;
                            const scalar_t* sa = sas.data() + s * N;
                            scalar_t* __restrict__ adr = acc_dr.data();
                            scalar_t* __restrict__ adk = acc_dk.data();
                            scalar_t* __restrict__ adb = acc_db.data();
                            scalar_t* __restrict__ adw = acc_dw.data();
                            scalar_t* __restrict__ ada = acc_da.data();
                            std::fill(acc_dr.begin(), acc_dr.end(), scalar_t(0));
                            std::fill(acc_dk.begin(), acc_dk.end(), scalar_t(0));
                            std::fill(acc_db.begin(), acc_db.end(), scalar_t(0));
                            std::fill(acc_dw.begin(), acc_dw.end(), scalar_t(0));
                            std::fill(acc_da.begin(), acc_da.end(), scalar_t(0));
                            // Row i of dS only involves row i of the states, so each row is
                            // finished (backward_row) while it sits in L1:
                            //   dS += dy r^T ; dr = S_t^T dy ; dv = dS k ; dk = dS^T v ;
                            //   dSb = dS b ; db = dS^T sa ; dw = diag(S_prev^T dS) ;
                            //   da = S_prev^T dSb ; dS_prev = dS diag(w) + dSb a^T
                            for (int64_t i = 0; i < N; i++)
                                pdv[off + i] = backward_row<scalar_t, NT>(
                                    dS + i * N, Scur + i * N, Sprev + i * N, dy_[i], v_[i], sa[i],
                                    r_, k_, w_, a_, b_, adr, adk, adb, adw, ada, N);
                            for (int64_t j = 0; j < N; j++) {
                                pdr[off + j] = adr[j];
                                pdk[off + j] = adk[j];
                                pdb[off + j] = adb[j];
                                pdw[off + j] = adw[j];
                                pda[off + j] = ada[j];
                            }
                        }
                    }
                }
            });
        };
        if (N == 64) run(std::integral_constant<int, 64>{});
        else run(std::integral_constant<int, 0>{});
    });
    return {dr, dw, dk, dv, da, db, ds0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &wkv7_forward, "RWKV-7 wkv forward (CPU)");
    m.def("backward", &wkv7_backward, "RWKV-7 wkv backward (CPU)");
}
