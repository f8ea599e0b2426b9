// The emulator's scheduler, warp collectives and launch entry point.
//
// Fibers: each CUDA thread gets its own stack (started once with
// makecontext/setcontext, then switched with _setjmp/_longjmp, which do not
// touch the signal mask and so cost no system call). A thread runs until it
// must wait; the launch's ThreadOrder picks who runs next. Any misuse the
// emulator can see (lanes of a warp at different collectives, a full-mask
// collective with lanes missing, threads at different barriers, deadlock,
// bad ldmatrix addresses, launch bounds exceeded) fails the launch with a
// message; the host gets it as an error, never an abort.
#undef _FORTIFY_SOURCE  // __longjmp_chk rejects jumps between fiber stacks
#include "runtime.hpp"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

namespace emu {
namespace {

enum class State { Runnable, Blocked, Done };

struct Fiber {
  jmp_buf jb;
  ucontext_t uc;
  char* stack = nullptr;
  dim3 tid;
  int linear = 0;
  State state = State::Runnable;
  bool started = false;
  const char* bar_file = nullptr;  // the barrier it waits at
  int bar_line = 0;
};

// One lane's part in a warp collective: what it asked for, its inputs, and
// where its results go.
struct Slot {
  const char* op = nullptr;
  uint64_t in[10];
  void* out[4];
};
using CollFn = void (*)(Slot* lanes);

struct Warp {
  int live = 0;  // lanes that exist and have not exited
  int arrived = 0;
  Slot slot[32];
};

struct Kernel {
  KernelFn fn;
  size_t params_size;
  int max_threads;
};

std::map<std::string, Kernel>& registry() {
  static std::map<std::string, Kernel> r;
  return r;
}

// ThreadOrder, as the host passes it.
enum Order : uint32_t { kRoundRobin = 0, kLowestFirst = 1, kHighestFirst = 2, kRandom = 3 };

struct Sim {
  KernelFn kernel = nullptr;
  const void* params = nullptr;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<unsigned char> dyn;
  int threads = 0, alive = 0, bar_arrived = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  Fiber* cur = nullptr;
  jmp_buf sched;
  bool failed = false;
  std::string error;
  uint64_t switches = 0;
};
thread_local Sim* g = nullptr;

[[noreturn]] void fiber_entry_after_start();

void fiber_entry() {
  g->kernel(g->params);
  fiber_entry_after_start();
}

void wake_barrier(Sim& s) {
  for (Fiber& f : s.fibers)
    if (f.state == State::Blocked && f.bar_file) {
      f.state = State::Runnable;
      f.bar_file = nullptr;
    }
  s.bar_arrived = 0;
  s.bar_file = nullptr;
}

// The current fiber stops until someone makes it runnable.
void block_here() {
  Fiber* f = g->cur;
  f->state = State::Blocked;
  ++g->switches;
  if (_setjmp(f->jb) == 0) _longjmp(g->sched, 1);
}

[[noreturn]] void fiber_entry_after_start() {
  Sim& s = *g;
  Fiber* f = s.cur;
  f->state = State::Done;
  --s.alive;
  Warp& w = s.warps[f->linear / 32];
  --w.live;
  if (w.arrived > 0)
    fail("thread %d exited while %d lanes of its warp wait at a full-mask warp collective", f->linear,
         w.arrived);
  // Exited threads count as arrived at a barrier (sm_70+).
  if (s.bar_arrived > 0 && s.bar_arrived == s.alive) wake_barrier(s);
  _longjmp(s.sched, 1);
}

// Runs fiber `f` until it blocks or ends.
void run(Fiber& f) {
  g->cur = &f;
  ctx.thread_idx = f.tid;
  if (_setjmp(g->sched) == 0) {
    if (!f.started) {
      f.started = true;
      setcontext(&f.uc);
    }
    _longjmp(f.jb, 1);
  }
}

void warp_collective(const Slot& mine, CollFn fn) {
  Sim& s = *g;
  const int lin = s.cur->linear, wi = lin / 32, lane = lin % 32;
  Warp& w = s.warps[wi];
  if (w.live != 32)
    fail("full-mask '%s' in warp %d of block (%u,%u,%u) with %d live lanes (a partial warp, or lanes "
         "that exited)",
         mine.op, wi, ctx.block_idx.x, ctx.block_idx.y, ctx.block_idx.z, w.live);
  w.slot[lane] = mine;
  if (++w.arrived < 32) {
    block_here();
    return;
  }
  for (int l = 0; l < 32; ++l)
    if (std::strcmp(w.slot[l].op, mine.op) != 0)
      fail("lanes of warp %d in block (%u,%u,%u) are at different collectives: lane %d at '%s', lane %d at '%s'",
           wi, ctx.block_idx.x, ctx.block_idx.y, ctx.block_idx.z, l, w.slot[l].op, lane, mine.op);
  fn(w.slot);
  w.arrived = 0;
  for (int l = 0; l < 32; ++l) {
    Fiber& f = s.fibers[wi * 32 + l];
    if (l != lane) f.state = State::Runnable;
  }
}

uint16_t lo16(uint64_t v) { return (uint16_t)v; }
uint16_t hi16(uint64_t v) { return (uint16_t)(v >> 16); }
float half_to_f32(bool bf16, uint16_t h) { return bf16 ? __uint_as_float((uint32_t)h << 16) : cvt_f32_f16(h); }

// A 16x16 (row-major) · B 16x8 (column-major) + C, fragments per the PTX ISA
// (m16n8k16, .f32 accumulators): lane = 4g + t.
template <bool BF16> void mma_fn(Slot* sl) {
  float A[16][16], B[16][8], C[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    const uint64_t* in = sl[lane].in;  // a0..a3, b0, b1, c0..c3 (f32 bits)
    for (int r = 0; r < 4; ++r) {
      const int row = g + ((r & 1) ? 8 : 0), col = 2 * t + ((r & 2) ? 8 : 0);
      A[row][col] = half_to_f32(BF16, lo16(in[r]));
      A[row][col + 1] = half_to_f32(BF16, hi16(in[r]));
    }
    for (int r = 0; r < 2; ++r) {
      const int k = 2 * t + 8 * r;
      B[k][g] = half_to_f32(BF16, lo16(in[4 + r]));
      B[k + 1][g] = half_to_f32(BF16, hi16(in[4 + r]));
    }
    for (int e = 0; e < 4; ++e) C[g + (e >> 1) * 8][2 * t + (e & 1)] = __uint_as_float((uint32_t)in[6 + e]);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int e = 0; e < 4; ++e) {
      const int row = g + (e >> 1) * 8, col = 2 * t + (e & 1);
      double acc = C[row][col];  // exact products; one rounding at the end
      for (int k = 0; k < 16; ++k) acc += (double)A[row][k] * (double)B[k][col];
      *static_cast<float*>(sl[lane].out[e]) = (float)acc;
    }
  }
}

// Lane 8m + r gives row r of matrix m; lane 4g + t receives (row g, cols 2t,
// 2t+1) of each matrix, or with .trans (rows 2t, 2t+1, col g).
template <bool TRANS> void ldmatrix_fn(Slot* sl) {
  for (int lane = 0; lane < 32; ++lane) {
    const uint64_t a = sl[lane].in[0];
    if (a % 16) fail("ldmatrix: lane %d's row address 0x%llx is not 16-byte aligned", lane, (unsigned long long)a);
    if (a + 16 > ctx.dyn_size)
      fail("ldmatrix: lane %d's row address 0x%llx is outside the %zu bytes of dynamic shared memory", lane,
           (unsigned long long)a, ctx.dyn_size);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int m = 0; m < 4; ++m) {
      uint16_t e[2];
      for (int j = 0; j < 2; ++j) {
        const int row = TRANS ? 2 * t + j : g, col = TRANS ? g : 2 * t + j;
        std::memcpy(&e[j], ctx.dyn + sl[m * 8 + row].in[0] + 2 * col, 2);
      }
      *static_cast<uint32_t*>(sl[lane].out[m]) = (uint32_t)e[0] | ((uint32_t)e[1] << 16);
    }
  }
}

void shfl_fn(Slot* sl) {
  const char* op = sl[0].op;
  for (int l = 0; l < 32; ++l) {
    const int arg = (int)sl[l].in[1];
    int src = l;
    if (std::strcmp(op, "shfl.bfly") == 0) src = l ^ arg;
    else if (std::strcmp(op, "shfl.up") == 0) src = l - arg >= 0 ? l - arg : l;
    else if (std::strcmp(op, "shfl.down") == 0) src = l + arg < 32 ? l + arg : l;
    else src = arg & 31;
    *static_cast<uint64_t*>(sl[l].out[0]) = sl[src & 31].in[0];
  }
}

void ballot_fn(Slot* sl) {
  unsigned m = 0;
  for (int l = 0; l < 32; ++l) m |= (sl[l].in[0] ? 1u : 0u) << l;
  for (int l = 0; l < 32; ++l) *static_cast<unsigned*>(sl[l].out[0]) = m;
}

void check_mask(const char* op, unsigned mask) {
  if (mask != 0xffffffffu) fail("'%s' with mask 0x%08x: only full-mask warp collectives are emulated", op, mask);
}

std::string describe_deadlock(Sim& s) {
  int at_bar = 0, at_warp = 0, done = 0;
  std::string where;
  for (Fiber& f : s.fibers) {
    if (f.state == State::Done) ++done;
    else if (f.bar_file) {
      ++at_bar;
      if (where.empty()) where = std::string(f.bar_file) + ":" + std::to_string(f.bar_line);
    } else ++at_warp;
  }
  char buf[512];
  snprintf(buf, sizeof buf,
           "deadlock in block (%u,%u,%u): %d threads wait at __syncthreads (%s), %d at warp collectives "
           "whose other lanes never arrive, %d exited",
           ctx.block_idx.x, ctx.block_idx.y, ctx.block_idx.z, at_bar, where.c_str(), at_warp, done);
  return buf;
}

uint64_t next_random(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// Runs one block to completion (or failure) in the chosen order.
void run_block(Sim& s, uint32_t order, uint64_t& rng) {
  std::vector<int> runnable;
  for (;;) {
    runnable.clear();
    bool left = false;
    for (Fiber& f : s.fibers) {
      if (f.state == State::Done) continue;
      left = true;
      if (f.state == State::Runnable) runnable.push_back(f.linear);
    }
    if (!left) return;
    if (runnable.empty()) {
      s.failed = true;
      s.error = describe_deadlock(s);
      return;
    }
    if (order == kRoundRobin) {
      // Everyone runnable gets a turn, in thread order.
      for (int i : runnable) {
        if (s.fibers[i].state != State::Runnable) continue;
        run(s.fibers[i]);
        if (s.failed) return;
      }
      continue;
    }
    int pick;
    if (order == kLowestFirst) pick = runnable.front();
    else if (order == kHighestFirst) pick = runnable.back();
    else pick = runnable[next_random(rng) % runnable.size()];
    run(s.fibers[pick]);
    if (s.failed) return;
  }
}

}  // namespace

void fail(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  Sim& s = *g;
  s.failed = true;
  s.error = buf;
  _longjmp(s.sched, 1);  // back to the scheduler; the block is abandoned
}

Registration::Registration(const char* name, size_t params_size, int max_threads, KernelFn fn) {
  registry()[name] = Kernel{fn, params_size, max_threads};
}

void syncthreads(const char* file, int line) {
  Sim& s = *g;
  if (s.bar_arrived > 0 && (s.bar_line != line || std::strcmp(s.bar_file, file) != 0))
    fail("threads of block (%u,%u,%u) wait at different barriers: %s:%d and %s:%d", ctx.block_idx.x,
         ctx.block_idx.y, ctx.block_idx.z, s.bar_file, s.bar_line, file, line);
  s.bar_file = file;
  s.bar_line = line;
  if (++s.bar_arrived == s.alive) {
    wake_barrier(s);
    return;
  }
  s.cur->bar_file = file;
  s.cur->bar_line = line;
  block_here();
}

uint64_t shfl(const char* op, unsigned mask, uint64_t bits, int arg, int width) {
  check_mask(op, mask);
  if (width != 32) fail("'%s' with width %d: only width 32 is emulated", op, width);
  uint64_t r;
  Slot s;
  s.op = op;
  s.in[0] = bits;
  s.in[1] = (uint64_t)(int64_t)arg;
  s.out[0] = &r;
  warp_collective(s, shfl_fn);
  return r;
}

unsigned ballot(unsigned mask, int pred) {
  check_mask("vote.ballot", mask);
  unsigned r;
  Slot s;
  s.op = "vote.ballot";
  s.in[0] = pred != 0;
  s.out[0] = &r;
  warp_collective(s, ballot_fn);
  return r;
}

void mma_m16n8k16(bool bf16, float* c, const uint32_t* a, const uint32_t* b) {
  Slot s;
  s.op = bf16 ? "mma.m16n8k16.bf16" : "mma.m16n8k16.f16";
  for (int i = 0; i < 4; ++i) s.in[i] = a[i];
  s.in[4] = b[0];
  s.in[5] = b[1];
  for (int i = 0; i < 4; ++i) {
    s.in[6 + i] = __float_as_uint(c[i]);
    s.out[i] = &c[i];
  }
  warp_collective(s, bf16 ? mma_fn<true> : mma_fn<false>);
}

void ldmatrix_x4(bool trans, uint32_t* r, uint32_t addr) {
  Slot s;
  s.op = trans ? "ldmatrix.x4.trans" : "ldmatrix.x4";
  s.in[0] = addr;
  for (int i = 0; i < 4; ++i) s.out[i] = &r[i];
  warp_collective(s, trans ? ldmatrix_fn<true> : ldmatrix_fn<false>);
}

}  // namespace emu

// ---- the host's entry points ------------------------------------------------------------

extern "C" {

// Mirrors emu::EmuLaunch in kernels/src/cuda/emu/mod.rs.
struct PagodaEmuLaunch {
  uint32_t grid[3];
  uint32_t block[3];
  uint64_t dyn_smem_bytes;
  uint32_t order;
  uint32_t reserved;
  uint64_t seed;
  uint64_t stack_bytes;
};

// Runs `kernel` over the whole grid. Returns 0, or 1 with a message in `err`.
int pagoda_emu_launch(const char* kernel, const PagodaEmuLaunch* l, const void* params, size_t params_size,
                      char* err, size_t err_len, uint64_t* switches) {
  using namespace emu;
  auto say = [&](const std::string& m) {
    snprintf(err, err_len, "%s: %s", kernel, m.c_str());
    return 1;
  };
  auto it = registry().find(kernel);
  if (it == registry().end()) return say("no such kernel in the emulator build");
  const Kernel& k = it->second;
  if (params_size != k.params_size)
    return say("parameter struct of " + std::to_string(params_size) + " bytes, the kernel takes " +
               std::to_string(k.params_size));
  const uint64_t threads = (uint64_t)l->block[0] * l->block[1] * l->block[2];
  if (threads == 0 || threads > 1024) return say("block of " + std::to_string(threads) + " threads");
  if (threads > (uint64_t)k.max_threads)
    return say("block of " + std::to_string(threads) + " threads exceeds __launch_bounds__(" +
               std::to_string(k.max_threads) + ")");
  if (l->grid[0] == 0 || l->grid[1] == 0 || l->grid[2] == 0) return say("empty grid");
  if (l->dyn_smem_bytes > 227 * 1024) return say("more dynamic shared memory than any GPU has (227 KiB)");

  Sim s;
  Sim* outer = g;
  g = &s;
  s.kernel = k.fn;
  // The kernel reads its own copy, as a GPU reads the launch's parameter buffer.
  std::vector<unsigned char> pbuf((const unsigned char*)params, (const unsigned char*)params + params_size);
  s.params = pbuf.data();
  s.threads = (int)threads;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t stack = ((l->stack_bytes ? l->stack_bytes : 256 * 1024) + page - 1) / page * page;
  // One stack per thread, each below a guard page: an overflow faults rather than corrupts.
  const size_t span = (stack + page) * threads;
  char* stacks = (char*)mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                             -1, 0);
  if (stacks == MAP_FAILED) {
    g = outer;
    return say("no memory for the fiber stacks");
  }
  for (uint64_t i = 0; i < threads; ++i) mprotect(stacks + i * (stack + page), page, PROT_NONE);

  ThreadCtx saved = ctx;
  ctx.grid_dim = dim3{l->grid[0], l->grid[1], l->grid[2]};
  ctx.block_dim = dim3{l->block[0], l->block[1], l->block[2]};
  uint64_t rng = l->seed * 0x9E3779B97F4A7C15ull + 1;
  for (unsigned bz = 0; bz < l->grid[2] && !s.failed; ++bz)
    for (unsigned by = 0; by < l->grid[1] && !s.failed; ++by)
      for (unsigned bx = 0; bx < l->grid[0] && !s.failed; ++bx) {
        ctx.block_idx = dim3{bx, by, bz};
        // Poison: a read of shared memory nobody wrote is NaN / all ones.
        s.dyn.assign(l->dyn_smem_bytes, 0xff);
        ctx.dyn = s.dyn.data();
        ctx.dyn_size = s.dyn.size();
        s.fibers.assign(threads, Fiber{});
        s.warps.assign((threads + 31) / 32, Warp{});
        s.alive = (int)threads;
        s.bar_arrived = 0;
        s.bar_file = nullptr;
        for (size_t w = 0; w < s.warps.size(); ++w) s.warps[w].live = (int)std::min<uint64_t>(32, threads - 32 * w);
        for (int i = 0; i < (int)threads; ++i) {
          Fiber& f = s.fibers[i];
          f.linear = i;
          f.tid = dim3{i % l->block[0], (i / l->block[0]) % l->block[1], i / (l->block[0] * l->block[1])};
          f.stack = stacks + (size_t)i * (stack + page) + page;
          getcontext(&f.uc);
          f.uc.uc_stack.ss_sp = f.stack;
          f.uc.uc_stack.ss_size = stack;
          f.uc.uc_link = nullptr;
          makecontext(&f.uc, (void (*)())fiber_entry, 0);
        }
        run_block(s, l->order, rng);
      }
  ctx = saved;
  munmap(stacks, span);
  g = outer;
  if (switches) *switches = s.switches;
  if (s.failed) return say(s.error);
  return 0;
}
}
