// libfuse's low-level operations over fs::Filesystem (thin adapters: unpack, call, reply), the
// session that serves them, and mount point checks. The only file that includes libfuse.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <malloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/errno_error.h"
#include "common/mutex.h"
#include "fs/daemon.h"
#include "fs/guard.h"

namespace imagefs::fs {
namespace {

// Reads as large as the kernel will send (its limit is 256 pages per request).
constexpr unsigned kMaxRead = 1U << 20;

// What every callback reaches through fuse_req_userdata.
struct Session {
  Filesystem& fs;
  const ServeOptions& options;
};

Session& session_of(fuse_req_t req) { return *static_cast<Session*>(fuse_req_userdata(req)); }
Filesystem& fs_of(fuse_req_t req) { return session_of(req).fs; }

// The user behind a request (other users reach the mount only with --allow-other).
Caller caller_of(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return ctx != nullptr ? Caller{ctx->uid} : Caller{};
}

fuse_entry_param to_param(const Entry& e) {
  fuse_entry_param p{};
  p.ino = e.ino;
  p.attr = e.attr;
  p.entry_timeout = e.entry_timeout;
  p.attr_timeout = e.attr_timeout;
  return p;
}

void reply_error(fuse_req_t req, const Error& error) {
  fuse_reply_err(req, error.code > 0 ? error.code : EIO);
}

// fuse_file_info::fh carries a pointer to what open/opendir made (libfuse's own examples do so).
template <class T>
T* from_fh(uint64_t fh) {
  return reinterpret_cast<T*>(fh);  // NOLINT(performance-no-int-to-ptr)
}

void op_init(void* userdata, fuse_conn_info* conn) {
  (void)userdata;
  if ((conn->capable & FUSE_CAP_CACHE_SYMLINKS) != 0) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if ((conn->capable & FUSE_CAP_READDIRPLUS) != 0) conn->want |= FUSE_CAP_READDIRPLUS;
  if ((conn->capable & FUSE_CAP_PARALLEL_DIROPS) != 0) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  // Content never changes under an inode number: no invalidation on mtime changes. Archives
  // that take host files decide at open (keep_cache).
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  conn->max_read = kMaxRead;
  conn->max_readahead = kMaxRead;
}

// Threads for requests that may wait on a registry, a download or an archive build (lookups,
// getattr and opendir outside open images' trees). They reply from here (libfuse lets any
// thread answer a request), so libfuse's own threads (--threads) stay free for reads: however
// many lookups hang on a dead registry, reads of cached images are served. Threads are made on
// demand up to kMaxSlowThreads (then requests queue) and end after kSlowIdle without work.
class SlowPool {
 public:
  static constexpr unsigned kMaxSlowThreads = 256;
  static constexpr std::chrono::seconds kSlowIdle{10};

  SlowPool() = default;
  SlowPool(const SlowPool&) = delete;
  SlowPool& operator=(const SlowPool&) = delete;
  // Runs what is queued, then waits for every thread to end (each job is bounded by the
  // registry deadlines).
  ~SlowPool() {
    MutexLock lock(mu_);
    stopping_ = true;
    work_.notify_all();
    while (threads_ > 0) ended_.wait(mu_);
  }

  // Runs `job` on a pool thread (on this one if no thread can be made).
  void submit(std::function<void()> job) {
    {
      MutexLock lock(mu_);
      queue_.push_back(std::move(job));
      // Woken threads count as idle until they run: one idle thread per queued job.
      if (idle_ >= queue_.size()) {
        work_.notify_one();
        return;
      }
      if (threads_ < kMaxSlowThreads) {
        try {
          std::thread([this] { work(); }).detach();
          ++threads_;
          return;
        } catch (const std::system_error&) {
          if (threads_ > 0) return;  // a running thread will take it
        }
      } else {
        return;
      }
      job = std::move(queue_.back());
      queue_.pop_back();
    }
    job();
  }

 private:
  void work() {
    mu_.lock();
    for (;;) {
      if (queue_.empty() && !stopping_) {
        ++idle_;
        auto until = std::chrono::steady_clock::now() + kSlowIdle;
        while (queue_.empty() && !stopping_)
          if (work_.wait_until(mu_, until) == std::cv_status::timeout) break;
        --idle_;
      }
      if (queue_.empty()) break;  // idle for kSlowIdle, or the pool is closing
      std::function<void()> job = std::move(queue_.front());
      queue_.pop_front();
      mu_.unlock();
      job();
      job = nullptr;
      mu_.lock();
    }
    --threads_;
    ended_.notify_all();
    mu_.unlock();
  }

  Mutex mu_;
  std::condition_variable_any work_;
  std::condition_variable_any ended_;
  std::deque<std::function<void()>> queue_ GUARDED_BY(mu_);
  unsigned threads_ GUARDED_BY(mu_) = 0;
  unsigned idle_ GUARDED_BY(mu_) = 0;
  bool stopping_ GUARDED_BY(mu_) = false;
};

// The pool of the session being served (one per process); null outside serve().
std::atomic<SlowPool*> slow_pool{nullptr};

// Whether the process behind a request is being killed: SIGKILL pending for its thread, which
// the kernel also sets for every thread of a process that a fatal signal (one it does not
// handle) ends. A caller whose state cannot be read (gone, or a pid from another namespace: 0)
// counts as dying (so does one whose state could not be read for lack of memory). Reads
// /proc/PID/status: only after an interrupt came.
bool caller_dying(pid_t pid) noexcept {
  if (pid <= 0) return true;
  try {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    if (!status) return true;
    constexpr uint64_t kKill = uint64_t{1} << (SIGKILL - 1);
    std::string line;
    while (std::getline(status, line)) {
      if (!line.starts_with("SigPnd:") && !line.starts_with("ShdPnd:")) continue;
      uint64_t pending = std::strtoull(line.c_str() + 7, nullptr, 16);
      if ((pending & kKill) != 0) return true;
    }
    return false;
  } catch (...) {
    return true;
  }
}

class InterruptWatch;
InterruptWatch& interrupt_watch();

// A request answered from the slow pool, which its caller may abandon. A process signalled while
// its lookup waits on a registry makes the kernel send FUSE_INTERRUPT; a killed one then sleeps
// uninterruptibly (state D, deaf to kill -9) until the request is answered, however long the
// registry takes. So:
// - A dying caller (caller_dying) is answered EINTR at once: the process goes, the job goes on,
//   and its late answer is dropped (a lookup's reference, counted for it, is given back).
// - A caller that lives on (a signal it handles) keeps waiting for the real answer: an EINTR
//   would fail a stat() or open() the program expects to be restarted (SA_RESTART). The kernel
//   sends one interrupt per request, so such a request is watched (InterruptWatch, every 250 ms)
//   in case its caller is killed afterwards.
// Exactly one answer: the job and the interrupt side race for it through `state_` (open ->
// claimed by the job, or open -> abandoned with EINTR); the loser does not touch the request.
// Lifetimes, from libfuse 3.14's fuse_lowlevel.c: the request is freed by its answer
// (fuse_free_req, once its reference count falls to 0). The interrupt callback runs under the
// request's own lock, with a reference held by libfuse's find_interrupted() (so answering from
// it is safe), or straight from fuse_req_interrupt_func() when the interrupt came first, where
// it must not answer: libfuse unlocks the request after the callback returns, and an answer
// would have freed it. A claim deregisters the callback with fuse_req_interrupt_func(req, NULL),
// which takes that same lock, so no callback is running or will run once it returns. A job never
// reads the request (its session, its caller) before claiming it: everything it needs is copied
// in the FUSE thread.
class Pending : public std::enable_shared_from_this<Pending> {
 public:
  explicit Pending(fuse_req_t req) : req_(req) {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    pid_ = ctx != nullptr ? ctx->pid : 0;
  }
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;

  // The request, for the answer: only after claim() returned true.
  [[nodiscard]] fuse_req_t req() const { return req_; }

  // Registers for interrupts, in the FUSE thread, before the job is queued. False when the
  // caller was interrupted already and is dying: the request was answered EINTR, drop the job.
  bool listen() {
    listening_ = true;
    t_listening = this;
    fuse_req_interrupt_func(req_, &Pending::on_interrupt, this);
    t_listening = nullptr;
    if (!interrupted_early_) return true;
    return !interrupted();
  }

  // The job's side, before it answers: true when the job answers (now and on every later call),
  // false when the caller abandoned the request, which was answered EINTR and must not be
  // touched again.
  bool claim() {
    int expected = kOpen;
    if (state_.compare_exchange_strong(expected, kClaimed)) {
      if (listening_) fuse_req_interrupt_func(req_, nullptr, nullptr);
      return true;
    }
    return expected == kClaimed;
  }

  // The interrupt side: EINTR now, unless the job has claimed the request. True when it did.
  bool abandon() {
    int expected = kOpen;
    if (!state_.compare_exchange_strong(expected, kAbandoned)) return false;
    fuse_reply_err(req_, EINTR);
    return true;
  }

  [[nodiscard]] bool settled() const { return state_.load() != kOpen; }
  [[nodiscard]] pid_t caller() const { return pid_; }

 private:
  enum : int { kOpen = 0, kClaimed = 1, kAbandoned = 2 };

  // The kernel says the caller was signalled: release it if it is dying, else watch it (or
  // release it, if it cannot be watched). True when the request was answered (EINTR). Runs in
  // libfuse's interrupt callback: never throws.
  bool interrupted() noexcept;

  static void on_interrupt(fuse_req_t req, void* data) {
    (void)req;
    auto* self = static_cast<Pending*>(data);
    if (self->settled()) return;
    if (t_listening == self) {  // inside fuse_req_interrupt_func: listen() decides after it
      self->interrupted_early_ = true;
      return;
    }
    self->interrupted();
  }

  static thread_local Pending* t_listening;

  fuse_req_t req_;
  pid_t pid_ = 0;
  std::atomic<int> state_{kOpen};
  bool listening_ = false;          // set before the job is queued, read by its thread after
  bool interrupted_early_ = false;  // only in listen()'s thread, during registration
};

thread_local Pending* Pending::t_listening = nullptr;

// Requests whose callers were interrupted by a signal they survive (see Pending), until they are
// answered or their callers die. Checked by the pruner thread of serve() every 250 ms. Holds at
// most one entry per request in flight.
class InterruptWatch {
 public:
  void add(std::shared_ptr<Pending> pending) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    watched_.push_back(std::move(pending));
  }
  // Answers EINTR to those whose callers are dying; forgets those answered. (Under the lock:
  // an answer takes only libfuse's session lock, which add()'s caller does not hold.)
  void check() EXCLUDES(mu_) {
    MutexLock lock(mu_);
    std::erase_if(watched_, [](const std::shared_ptr<Pending>& p) {
      if (!p->settled() && caller_dying(p->caller())) p->abandon();
      return p->settled();
    });
  }
  void clear() EXCLUDES(mu_) {
    MutexLock lock(mu_);
    watched_.clear();
  }

 private:
  Mutex mu_;
  std::vector<std::shared_ptr<Pending>> watched_ GUARDED_BY(mu_);
};

InterruptWatch& interrupt_watch() {
  static InterruptWatch watch;
  return watch;
}

bool Pending::interrupted() noexcept {
  try {
    if (!caller_dying(pid_)) {
      interrupt_watch().add(shared_from_this());
      return false;
    }
  } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory: release the caller instead
  }
  return abandon();
}

// A request's answer, from a job that may run on the slow pool: claim() it first, and answer it
// (one fuse_reply_*) only if that returns true; otherwise drop the result.
using Job = std::function<void(Pending& answer)>;

// Runs `job` now when `at_once` (under the callback's own guard), else on the slow pool, under a
// guard of its own (nothing may escape a pool thread), listening for the caller's interrupts.
void dispatch(std::string_view op, uint64_t ino, bool at_once, fuse_req_t req, Job job) {
  SlowPool* pool = slow_pool.load();
  if (at_once || pool == nullptr) {
    Pending now(req);  // answered on this thread, before any interrupt is listened for
    return job(now);
  }
  auto pending = std::make_shared<Pending>(req);
  // From here an interrupt may answer (and free) the request at any moment: read nothing of it.
  const ServeOptions* options = &session_of(req).options;
  if (!pending->listen()) return;  // the caller is gone already: answered EINTR
  // Nothing may throw past this point into the callback's guard, which would answer again.
  guarded(
      op, ino, options->log,
      [&] {
        pool->submit([op, ino, options, pending, job = std::move(job)] {
          guarded(
              op, ino, options->log, [&] { job(*pending); },
              [&] {
                if (pending->claim()) fuse_reply_err(pending->req(), EIO);
              });
        });
      },
      [&] {
        if (pending->claim()) fuse_reply_err(pending->req(), EIO);
      });
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name_in) {
  Filesystem& fs = fs_of(req);
  // The name lives in libfuse's request buffer, reused once this callback returns.
  dispatch("lookup", parent, fs.answers_at_once(FsOp::lookup, parent), req,
           [&fs, parent, name = std::string(name_in), caller = caller_of(req)](Pending& answer) {
             auto e = fs.lookup(parent, name, caller);
             if (!answer.claim()) {
               if (e.ok()) fs.forget(e->ino, 1);  // counted for an answer never sent
               return;
             }
             if (!e.ok()) return reply_error(answer.req(), e.error());
             fuse_entry_param p = to_param(*e);
             // lookup() counted the reference; an interrupted reply never reached the kernel.
             if (fuse_reply_entry(answer.req(), &p) != 0) fs.forget(e->ino, 1);
           });
}

// The kernel drops references it took by lookups and readdirplus entries (fs/filesystem.h,
// "References"): only name directories are counted, the rest is computed.
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  fs_of(req).forget(ino, nlookup);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) fs_of(req).forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  (void)fi;
  Filesystem& fs = fs_of(req);
  dispatch("getattr", ino, fs.answers_at_once(FsOp::getattr, ino), req,
           [&fs, ino](Pending& answer) {
             auto e = fs.getattr(ino);
             if (!answer.claim()) return;
             if (!e.ok()) return reply_error(answer.req(), e.error());
             fuse_reply_attr(answer.req(), &e->attr, e->attr_timeout);
           });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  auto target = fs_of(req).readlink(ino);
  if (!target.ok()) return reply_error(req, target.error());
  fuse_reply_readlink(req, target->c_str());
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto file = fs_of(req).open(ino, fi->flags, caller_of(req));
  if (!file.ok()) return reply_error(req, file.error());
  fi->keep_cache = (*file)->keep_cache ? 1 : 0;
  fi->direct_io = (*file)->direct_io ? 1 : 0;
  fi->noflush = 1;
  auto* held = new std::shared_ptr<OpenFile>(std::move(*file));
  fi->fh = reinterpret_cast<uint64_t>(held);
  if (fuse_reply_open(req, fi) != 0) delete held;  // the open was interrupted
}

const OpenFile& open_file(fuse_file_info* fi) {
  return **from_fh<std::shared_ptr<OpenFile>>(fi->fh);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  (void)ino;
  const OpenFile& file = open_file(fi);
  auto offset = static_cast<uint64_t>(off);
  if (file.fd >= 0 && !file.archive) {
    // A rootfs file: let libfuse read the layer's data file into the reply.
    size_t n = offset >= file.size ? 0 : std::min<uint64_t>(size, file.size - offset);
    fuse_bufvec buf = FUSE_BUFVEC_INIT(n);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = file.fd;
    buf.buf[0].pos = static_cast<off_t>(file.fd_offset + offset);
    // Counted before the reply: once it is sent, the reader may close the file and a release on
    // another thread free `file`.
    count_served(file, n);
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
    return;
  }
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < size) buffer.resize(size);
  auto n = fs_of(req).read(file, offset, std::span(buffer.data(), size));
  if (!n.ok()) return reply_error(req, n.error());
  count_served(file, *n);  // before the reply, as above
  fuse_reply_buf(req, reinterpret_cast<const char*>(buffer.data()), *n);
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  (void)ino;
  delete from_fh<std::shared_ptr<OpenFile>>(fi->fh);
  fuse_reply_err(req, 0);
}

// A directory's whole listing is taken at opendir, so offsets are plain indexes into it.
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi_in) {
  // fi_in lives on the calling thread's stack: the job keeps a copy.
  Filesystem& fs = fs_of(req);
  dispatch("opendir", ino, fs.answers_at_once(FsOp::opendir, ino), req,
           [&fs, ino, fi_copy = *fi_in, caller = caller_of(req)](Pending& answer) mutable {
             fuse_file_info* fi = &fi_copy;
             auto items = fs.readdir(ino, caller);
             if (!answer.claim()) return;
             if (!items.ok()) return reply_error(answer.req(), items.error());
             auto held = std::make_unique<std::vector<DirItem>>(std::move(*items));
             fi->fh = reinterpret_cast<uint64_t>(held.get());
             fi->cache_readdir = fs.listing_immutable(ino) ? 1 : 0;
             fi->keep_cache = fi->cache_readdir;
             if (fuse_reply_open(answer.req(), fi) == 0) (void)held.release();
           });
}

void readdir_common(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  const auto& items = *from_fh<std::vector<DirItem>>(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  // The FUSE rule: each readdirplus entry sent with a node id (ino != 0) counts as a lookup, and
  // the kernel will forget it. Counted before the reply (a forget may follow it at once), taken
  // back if the reply fails. "." and ".." never carry one (has_attr is false for them).
  std::vector<fuse_ino_t> counted;
  for (auto i = static_cast<size_t>(off); i < items.size(); ++i) {
    const DirItem& item = items[i];
    size_t left = size - used;
    auto next = static_cast<off_t>(i + 1);
    size_t n = 0;
    if (plus) {
      fuse_entry_param p = to_param(item.entry);
      // No attributes where they cost real work, and none for "." and "..": the kernel then
      // keeps the name only and looks it up when asked.
      if (!item.has_attr) p.ino = 0;
      n = fuse_add_direntry_plus(req, buf.data() + used, left, item.name.c_str(), &p, next);
    } else {
      n = fuse_add_direntry(req, buf.data() + used, left, item.name.c_str(), &item.entry.attr,
                            next);
    }
    if (n > left) break;
    used += n;
    if (plus && item.has_attr && item.entry.ino != 0) {
      fs_of(req).remember(item.entry.ino);
      counted.push_back(item.entry.ino);
    }
  }
  if (fuse_reply_buf(req, buf.data(), used) != 0)
    for (fuse_ino_t ino : counted) fs_of(req).forget(ino, 1);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  (void)ino;
  readdir_common(req, size, off, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  (void)ino;
  readdir_common(req, size, off, fi, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  (void)ino;
  delete from_fh<std::vector<DirItem>>(fi->fh);
  fuse_reply_err(req, 0);
}

void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  (void)ino;
  struct statvfs st {};
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto value = fs_of(req).getxattr(ino, name);
  if (!value.ok()) return reply_error(req, value.error());
  if (size == 0) return (void)fuse_reply_xattr(req, value->size());
  if (size < value->size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, value->data(), value->size());
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto names = fs_of(req).listxattr(ino);
  if (!names.ok()) return reply_error(req, names.error());
  std::string list;
  for (const std::string& name : *names) {
    list += name;
    list.push_back('\0');
  }
  if (size == 0) return (void)fuse_reply_xattr(req, list.size());
  if (size < list.size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, list.data(), list.size());
}

// Every callback runs inside guarded() (fs/guard.h): an exception from the core (out of memory,
// a library's throw) answers that request with EIO and writes a log line; the daemon goes on.
// The contract guarded() relies on: each callback above answers its request as its last step.
template <size_t N>
struct OpName {
  char text[N];
  constexpr OpName(const char (&s)[N]) {  // NOLINT(google-explicit-constructor)
    std::copy_n(s, N, text);
  }
};

void answer_eio(fuse_req_t req) { fuse_reply_err(req, EIO); }
void answer_none(fuse_req_t req) { fuse_reply_none(req); }  // forget takes no answer

template <class First, class... Rest>
uint64_t ino_of(const First& first, const Rest&... /*rest*/) {
  if constexpr (std::is_same_v<First, fuse_ino_t>) {
    return first;
  } else {
    return 0;
  }
}

template <OpName Name, auto Op, void (*Fail)(fuse_req_t) = answer_eio>
struct Guarded;
template <OpName Name, class... Args, void (*Op)(fuse_req_t, Args...), void (*Fail)(fuse_req_t)>
struct Guarded<Name, Op, Fail> {
  static void call(fuse_req_t req, Args... args) {
    guarded(
        Name.text, ino_of(args...), session_of(req).options.log, [&] { Op(req, args...); },
        [&] { Fail(req); });
  }
};

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;  // sets flags only; no request to answer
  ops.lookup = Guarded<"lookup", op_lookup>::call;
  ops.forget = Guarded<"forget", op_forget, answer_none>::call;
  ops.forget_multi = Guarded<"forget_multi", op_forget_multi, answer_none>::call;
  ops.getattr = Guarded<"getattr", op_getattr>::call;
  ops.readlink = Guarded<"readlink", op_readlink>::call;
  ops.open = Guarded<"open", op_open>::call;
  ops.read = Guarded<"read", op_read>::call;
  ops.release = Guarded<"release", op_release>::call;
  ops.opendir = Guarded<"opendir", op_opendir>::call;
  ops.readdir = Guarded<"readdir", op_readdir>::call;
  ops.readdirplus = Guarded<"readdirplus", op_readdirplus>::call;
  ops.releasedir = Guarded<"releasedir", op_releasedir>::call;
  ops.statfs = Guarded<"statfs", op_statfs>::call;
  ops.getxattr = Guarded<"getxattr", op_getxattr>::call;
  ops.listxattr = Guarded<"listxattr", op_listxattr>::call;
  return ops;
}

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
struct LoopConfigDeleter {
  void operator()(fuse_loop_config* c) const { fuse_loop_cfg_destroy(c); }
};

// One line of /proc/self/mountinfo: mount point (field 5, octal-escaped) and fstype (after " - ").
struct MountLine {
  std::string mountpoint;
  std::string fstype;
  std::string device;  // "0:52"
};

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<MountLine> mount_lines() {
  std::vector<MountLine> lines;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string fstype;
    rest >> fstype;
    lines.push_back({unescape(point), fstype, dev});
  }
  return lines;
}

constexpr std::string_view kFsType = "fuse.imagefs";

// The kernel reads ahead 128 KiB on a FUSE mount unless told otherwise, so a VMM reading an
// archive sends a request per 128 KiB. Raising the mount's readahead to max_read makes requests
// of 1 MiB. Only root may; without it reads are just smaller. (The device comes from mountinfo:
// a stat of the mount point here would wait for this very daemon.)
void raise_readahead(const std::filesystem::path& mountpoint) {
  for (const MountLine& m : mount_lines()) {
    if (m.fstype != kFsType || m.mountpoint != mountpoint.string()) continue;
    std::ofstream ra("/sys/class/bdi/" + m.device + "/read_ahead_kb");
    ra << kMaxRead / 1024 << "\n";
  }
}

// libfuse 3.14 (Debian 12's) never lets the kernel send lookups and readdirs of one directory in
// parallel: it counts FUSE_CAP_PARALLEL_DIROPS as wanted by default, but its INIT reply is built
// from a list of capabilities that leaves that one out (do_init() in lib/fuse_lowlevel.c; fixed
// in 3.17 by libfuse commit c9905341). The kernel then takes a per-directory mutex around each
// lookup (fuse_lock_inode), uninterruptibly: one lookup waiting on a slow registry holds up every
// other name of its directory, cached ones included, and their callers cannot be killed. Setting
// conn->want in the init callback cannot help: the flag never reaches the reply. So the session's
// I/O goes through these two functions (fuse_session_custom_io over the same /dev/fuse fd, plain
// read and writev), which add FUSE_PARALLEL_DIROPS to the INIT reply when the kernel offered it.
// The daemon serves concurrent lookups in one directory as it does in different ones. Splicing is
// unaffected: imagefs never asks for it. With a libfuse that sends the flag itself, a no-op.
namespace dirops {

// The unique id of the INIT request whose reply gets the flag; 0: none (any more).
std::atomic<uint64_t> init_unique{0};
std::atomic<bool> negotiated{false};

ssize_t io_read(int fd, void* buf, size_t len, void* userdata) {
  (void)userdata;
  ssize_t n = ::read(fd, buf, len);
  // Only the first request can be INIT; errno stays as read() left it (libfuse reads it).
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header) + sizeof(fuse_init_in)) &&
      !negotiated.load(std::memory_order_relaxed)) {
    fuse_in_header in{};
    std::memcpy(&in, buf, sizeof in);
    if (in.opcode == FUSE_INIT) {
      fuse_init_in init{};
      std::memcpy(&init, static_cast<const char*>(buf) + sizeof in, sizeof init);
      if (init.major == FUSE_KERNEL_VERSION && (init.flags & FUSE_PARALLEL_DIROPS) != 0)
        init_unique = in.unique;
    }
  }
  return n;
}

ssize_t io_writev(int fd, struct iovec* iov, int count, void* userdata) {
  (void)userdata;
  uint64_t unique = init_unique.load();
  if (unique != 0 && count == 2 && iov[0].iov_len == sizeof(fuse_out_header) &&
      iov[1].iov_len >= offsetof(fuse_init_out, flags) + sizeof(uint32_t) &&
      iov[1].iov_len <= sizeof(fuse_init_out)) {
    fuse_out_header out{};
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    if (out.unique == unique) {
      init_unique = 0;
      if (out.error == 0) {
        // libfuse's reply struct is its own local: the flag goes into a copy.
        fuse_init_out reply{};
        std::memcpy(&reply, iov[1].iov_base, iov[1].iov_len);
        reply.flags |= FUSE_PARALLEL_DIROPS;
        std::array<struct iovec, 2> patched{iov[0], iov[1]};
        patched[1].iov_base = &reply;
        ssize_t n = ::writev(fd, patched.data(), 2);
        if (n >= 0) negotiated = true;
        return n;
      }
    }
  }
  return ::writev(fd, iov, count);
}

}  // namespace dirops

}  // namespace

Result<void> serve(Filesystem& fs, const ServeOptions& options,
                   const std::function<void()>& ready) {
  // SIGINT, SIGTERM and SIGHUP are taken by one thread (sigwait) rather than by libfuse's
  // handlers: libfuse would end the loop and then wait for every worker, and a worker waiting
  // for a download would keep the mount up until the download ends. Blocked here, before any
  // worker exists, so every thread inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop_signals, sig);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::vector<std::string> argv{
      "imagefs", "-o",
      "ro,default_permissions,fsname=imagefs,subtype=imagefs,max_read=" + std::to_string(kMaxRead)};
  if (options.allow_other) argv.back() += ",allow_other";
  if (options.debug) argv.emplace_back("-d");
  std::vector<char*> cargv;
  cargv.reserve(argv.size());
  for (std::string& a : argv) cargv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(cargv.size()), cargv.data());
  fuse_lowlevel_ops ops = make_ops();
  Session session_data{fs, options};
  std::unique_ptr<fuse_session, SessionDeleter> se(
      fuse_session_new(&args, &ops, sizeof ops, &session_data));
  if (!se) return make_error(EINVAL, "cannot start a FUSE session (libfuse said why above)");
  if (fuse_session_mount(se.get(), options.mountpoint.c_str()) != 0)
    return make_error(EIO, "cannot mount on " + options.mountpoint.string());
  // Parallel lookups in one directory (see dirops): the same fd, read and written by us.
  fuse_custom_io io{};
  io.read = dirops::io_read;
  io.writev = dirops::io_writev;
  if (int rc = fuse_session_custom_io(se.get(), &io, fuse_session_fd(se.get()));
      rc != 0 && options.log)
    options.log(
        errno_error(-rc, "cannot ask the kernel for parallel lookups in a directory").message +
        "; they are served one at a time");
  raise_readahead(options.mountpoint);
  ready();

  // The stop-signal thread: unmounts (lazily, so open files do not keep the mount) and ends the
  // process without waiting for work in flight, which the store is built to abandon: a pull cut
  // off here resumes next time. Readers still waiting get ECONNABORTED from the kernel.
  std::atomic<bool> loop_over{false};
  fuse_session* session = se.get();
  std::thread stopper([&stop_signals, &loop_over, session, &options] {
    int sig = 0;
    if (sigwait(&stop_signals, &sig) != 0 || loop_over.load()) return;
    fuse_session_exit(session);
    fuse_session_unmount(session);
    // The process ends here whatever on_signal does (its log line is a courtesy).
    guarded(
        "the stop-signal thread", 0, options.log,
        [&] {
          if (options.on_signal) options.on_signal(sig);
        },
        [] {});
    ::_exit(0);
  });
  // Lookups that may wait on registries run here; it outlives the loop (a reply needs the
  // session) and waits for them at the end.
  auto pool = std::make_unique<SlowPool>();
  slow_pool = pool.get();
  // Names that lead to nothing known are invalidated a second after their lookup (see
  // Filesystem::stale_names): the kernel then drops their dentries and FORGETs their inodes, so
  // the daemon's table of names follows. From this thread, never from a request handler: the
  // kernel locks the parent directory, which a lookup in flight may hold.
  std::thread pruner([&fs, &loop_over, session] {
    auto trimmed = std::chrono::steady_clock::now();
    int trims_due = 0;
    while (!loop_over.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      auto now = std::chrono::steady_clock::now();
      std::vector<std::pair<Ino, std::string>> names;
      try {  // no exception leaves a thread; out of memory here only delays the next pass
        // Callers that survived a signal while their request waits: released if they die.
        interrupt_watch().check();
        names = fs.stale_names(now - std::chrono::seconds(1), 100000);
      } catch (...) {
        continue;
      }
      for (const auto& [parent, name] : names)
        (void)fuse_lowlevel_notify_inval_entry(session, parent, name.data(), name.size());
      // The table's entries come and go by the thousand across the worker threads' malloc
      // arenas, which keep what is freed: give it back every 2 s while names come, and twice
      // after (the FORGETs follow the invalidations). Measured: 66 MiB of RSS after 700,000
      // unknown names without this, 22 MiB once trimmed.
      if (!names.empty()) trims_due = 2;
      if (trims_due > 0 && now - trimmed > std::chrono::seconds(2)) {
        ::malloc_trim(0);
        trimmed = now;
        --trims_due;
      }
    }
  });
  std::unique_ptr<fuse_loop_config, LoopConfigDeleter> config(fuse_loop_cfg_create());
  fuse_loop_cfg_set_clone_fd(config.get(), 1);
  fuse_loop_cfg_set_max_threads(config.get(), options.max_threads);
  fuse_loop_cfg_set_idle_threads(config.get(), std::min(options.max_threads, 4U));
  int rc = fuse_session_loop_mt(se.get(), config.get());
  slow_pool = nullptr;
  pool.reset();
  interrupt_watch().clear();  // every job has answered (or was abandoned)
  // Unmounted from outside (fusermount3 -u): wake the stop-signal thread to let it go.
  loop_over = true;
  pthread_kill(stopper.native_handle(), SIGHUP);
  stopper.join();
  pruner.join();
  fuse_session_unmount(se.get());
  if (rc < 0) return errno_error(-rc, "serving ended");
  return {};
}

Result<MountState> mount_state(const std::filesystem::path& mountpoint) {
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(mountpoint, ec);
  // statfs always reaches the daemon (stat may be answered from the kernel's attribute cache,
  // which holds the top directory for good).
  struct statvfs st {};
  int err = ::statvfs(abs.c_str(), &st) != 0 ? errno : 0;
  bool dead = err == ENOTCONN;
  if (err == ENOENT) return make_error(ENOENT, mountpoint.string() + ": no such directory");
  for (const MountLine& m : mount_lines()) {
    if (m.mountpoint != abs.lexically_normal().string()) continue;
    if (dead) return m.fstype == kFsType ? MountState::stale : MountState::stale_other;
    if (m.fstype == kFsType) return MountState::live;
  }
  if (dead) return MountState::stale_other;
  return MountState::free;
}

Result<void> detach(const std::filesystem::path& mountpoint) {
  if (::geteuid() == 0) {
    if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0)
      return errno_error(errno, "cannot unmount", mountpoint);
    return {};
  }
  pid_t pid = ::fork();
  if (pid < 0) return make_error(errno, "cannot run fusermount3");
  if (pid == 0) {
    ::execlp("fusermount3", "fusermount3", "-u", "-z", mountpoint.c_str(), nullptr);
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return make_error(EIO, "fusermount3 -u -z " + mountpoint.string() + " failed");
  return {};
}

std::vector<std::filesystem::path> imagefs_mounts() {
  std::vector<std::filesystem::path> mounts;
  for (const MountLine& m : mount_lines())
    if (m.fstype == kFsType) mounts.emplace_back(m.mountpoint);
  return mounts;
}

}  // namespace imagefs::fs
