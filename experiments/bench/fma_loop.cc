// The FP32 rate of this CPU's vector units: fused multiply-adds on values
// held in registers (no memory traffic), one thread per core. Built by
// ``experiments.bench.roof.measure_fma`` with ``-march=native``, so the
// 16-float vectors below become whatever the CPU has (one AVX-512 register,
// two AVX registers, ...). Twelve independent chains cover the FMA latency
// times the pipes of the CPUs measured here (4 cycles x 2 pipes).
//
// Usage: fma_loop THREADS SECONDS. Prints one JSON line: the best rate of
// three timings, each every thread running for about SECONDS.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

typedef float Vector __attribute__((vector_size(64)));
constexpr int kLanes = sizeof(Vector) / sizeof(float);
constexpr int kChains = 12;
constexpr long kChunk = 1 << 20;  // iterations between clock reads

using Clock = std::chrono::steady_clock;

// kChunk iterations of every chain; returns a sum so nothing is dropped.
static float Chunk(Vector* chains, Vector scale, Vector shift) {
  for (long n = 0; n < kChunk; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) chains[i] = chains[i] * scale + shift;
  }
  float sum = 0;
  for (int i = 0; i < kChains; ++i)
    for (int lane = 0; lane < kLanes; ++lane) sum += chains[i][lane];
  return sum;
}

// FLOPs per second of one thread that runs until `seconds` have passed.
static void Run(double seconds, std::atomic<bool>* go, double* rate, float* sink) {
  Vector chains[kChains];
  for (int i = 0; i < kChains; ++i)
    for (int lane = 0; lane < kLanes; ++lane) chains[i][lane] = i + lane * 1e-3f;
  Vector scale, shift;
  for (int lane = 0; lane < kLanes; ++lane) {
    scale[lane] = 0.999999f;
    shift[lane] = 1e-6f;
  }
  while (!go->load()) {
  }
  const auto start = Clock::now();
  long chunks = 0;
  double elapsed = 0;
  float sum = 0;
  do {
    sum += Chunk(chains, scale, shift);
    ++chunks;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  *rate = 2.0 * kLanes * kChains * kChunk * chunks / elapsed;
  *sink = sum;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s THREADS SECONDS\n", argv[0]);
    return 2;
  }
  const int threads = std::atoi(argv[1]);
  const double seconds = std::atof(argv[2]);
  if (threads < 1 || !(seconds > 0)) {
    std::fprintf(stderr, "THREADS must be >= 1 and SECONDS > 0\n");
    return 2;
  }
  double best = 0;
  float sink = 0;
  for (int timing = 0; timing < 3; ++timing) {
    std::atomic<bool> go(false);
    std::vector<double> rates(threads);
    std::vector<float> sums(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
      workers.emplace_back(Run, seconds, &go, &rates[t], &sums[t]);
    go.store(true);
    double total = 0;
    for (int t = 0; t < threads; ++t) {
      workers[t].join();
      total += rates[t];
      sink += sums[t];
    }
    if (total > best) best = total;
  }
  std::printf("{\"fma_threads\": %d, \"fma_gflops\": %.3f, \"checksum\": %g}\n",
              threads, best / 1e9, sink);
  return 0;
}
