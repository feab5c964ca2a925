// Projected, clipped coordinate sweeps on the rows of Y (nmfsched's hot loop on a GPU).
//
// The algorithm of nmfsched.kernels.cpu.projected_cd; its oracle is
// nmfsched.kernels.namespace.projected_cd_rows. Rows are independent once the k x k Gram G
// and the product P are formed, so one thread sweeps one row through the components in
// order (Gauss-Seidel), keeping the row's gradient in registers and current with one axpy
// per moved component. G and the per-component vectors sit in shared memory when they fit.
//
// Compile-time constants: NMF_K (components), NMF_SHARED (1: stage G in shared memory),
// NMF_REFRESH (the row's gradient is formed afresh every this many sweeps; between, the
// axpys keep it current: nmfsched.kernels.protocol.GRADIENT_REFRESH_SWEEPS).
// The statistics the learning-rate bound needs are reduced on the device: each row adds its
// starting gradient to grad_acc (its own row: no race) and sq_weight * g^2 to sq_acc
// (atomically, in double); clipped steps are counted into n_clipped.

template <typename T>
__global__ void projected_cd_rows(
    T* __restrict__ Y, const T* __restrict__ G, const T* __restrict__ P,
    const T* __restrict__ steps, const T* __restrict__ clip_rel, const T* __restrict__ clip_abs,
    const long long n_rows, const int max_sweeps, const double tol,
    const int accumulate, T* __restrict__ grad_acc, const double sq_weight,
    double* __restrict__ sq_acc, unsigned long long* __restrict__ n_clipped)
{
    const int K = NMF_K;
#if NMF_SHARED
    extern __shared__ unsigned char nmf_shared[];
    T* sG = reinterpret_cast<T*>(nmf_shared);
    T* s_steps = sG + K * K;
    T* s_rel = s_steps + K;
    T* s_abs = s_rel + K;
    for (int i = threadIdx.x; i < K * K; i += blockDim.x) sG[i] = G[i];
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        s_steps[i] = steps[i];
        s_rel[i] = clip_rel[i];
        s_abs[i] = clip_abs[i];
    }
    __syncthreads();
#else
    const T* sG = G;
    const T* s_steps = steps;
    const T* s_rel = clip_rel;
    const T* s_abs = clip_abs;
#endif
    const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n_rows) return;
    T* y = Y + r * K;
    const T* p = P + r * K;
    T g[NMF_K];
    unsigned long long clipped = 0;
    for (int sweep = 0; sweep < max_sweeps; ++sweep) {
        if (sweep % NMF_REFRESH == 0) {  // else the rank-one updates below kept g current
            for (int l = 0; l < K; ++l) g[l] = -p[l];
            for (int j = 0; j < K; ++j) {
                const T yj = y[j];
                if (yj != T(0)) {
                    for (int l = 0; l < K; ++l) g[l] += yj * sG[j * K + l];
                }
            }
        }
        if (accumulate && sweep == 0) {  // the gradient at the start of the step
            T* acc = grad_acc + r * K;
            for (int l = 0; l < K; ++l) {
                acc[l] += g[l];
                atomicAdd(&sq_acc[l], sq_weight * (double)g[l] * (double)g[l]);
            }
        }
        double moved = 0.0, size = 0.0;
        for (int j = 0; j < K; ++j) {
            const T s = s_steps[j];
            const T old = y[j];
            if (s == T(0)) {  // a frozen component
                size += fabs((double)old);
                continue;
            }
            T d = -s * g[j];
            const T a = s_rel[j] * (old < T(0) ? -old : old);
            const T c = a > s_abs[j] ? a : s_abs[j];
            if (d > c) {
                d = c;
                ++clipped;
            } else if (d < -c) {
                d = -c;
                ++clipped;
            }
            T next = old + d;
            if (next < T(0)) next = T(0);  // NaN < 0 is false: NaN propagates to the loss
            const T delta = next - old;
            if (delta != T(0)) {
                y[j] = next;
                for (int l = 0; l < K; ++l) g[l] += delta * sG[j * K + l];
            }
            moved += fabs((double)delta);
            size += fabs((double)next);
        }
        if (moved <= tol * size) break;
    }
    if (clipped) atomicAdd(n_clipped, clipped);
}
