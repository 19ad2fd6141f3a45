/*
 * spacebot._sandbox: start one program for a tool (shell, exec), confined.
 *
 *   spawn(argv, env, cwd, stdin_fd, stdout_fd, stderr_fd, rlimits, rw_paths, ro_paths,
 *         connect_ports=None, bind_ports=None) -> pid
 *   landlock_abi() -> int
 *   scan() -> list[(pid, ppid, pgrp, session)] of every live (not zombie) process
 *
 * The child gets a new session (its own process group, so the whole tree can be killed at once),
 * PR_SET_PDEATHSIG (it dies with its worker), PR_SET_NO_NEW_PRIVS, no capabilities (bounding,
 * ambient and current sets emptied, so a service running as root does not hand root's powers to
 * its tools), the given rlimits, no inherited descriptor but 0/1/2, and, where the kernel supports
 * Landlock, a ruleset that allows everything beneath rw_paths (exactly the file, when a path names
 * a file) and only reading/executing beneath ro_paths; from ABI 4, when connect_ports is a list,
 * TCP connect is allowed only to those ports and TCP bind only to the ports of bind_ports (none
 * when it is None; a server is given the one port it listens on); from ABI 6, signals and abstract
 * unix sockets are scoped to the tool's own processes.
 *
 * Everything that can fail and allocate is prepared before fork(); between fork() and execve()
 * the child makes only async-signal-safe calls. A failure there is reported to the parent through
 * a close-on-exec pipe (which step, errno), so the caller gets an OSError naming the step instead
 * of a bare exit status 127.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef __has_include
#if __has_include(<linux/landlock.h>)
#include <linux/landlock.h>
#endif
#endif

/* Constants from the Landlock UAPI, for headers older than the running kernel. */
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif
#ifndef LANDLOCK_RULE_PATH_BENEATH
#define LANDLOCK_RULE_PATH_BENEATH 1
#endif
#define SB_FS_EXECUTE (1ULL << 0)
#define SB_FS_WRITE_FILE (1ULL << 1)
#define SB_FS_READ_FILE (1ULL << 2)
#define SB_FS_READ_DIR (1ULL << 3)
#define SB_FS_ABI1_ALL ((1ULL << 13) - 1) /* EXECUTE .. MAKE_SYM */
#define SB_FS_REFER (1ULL << 13)          /* ABI 2 */
#define SB_FS_TRUNCATE (1ULL << 14)       /* ABI 3 */
#define SB_FS_IOCTL_DEV (1ULL << 15)      /* ABI 5 */
/* Rights that may be granted on a file (not a directory). */
#define SB_FS_FILE_RIGHTS (SB_FS_EXECUTE | SB_FS_WRITE_FILE | SB_FS_READ_FILE | SB_FS_TRUNCATE | SB_FS_IOCTL_DEV)
#define SB_RULE_NET_PORT 2                /* ABI 4 */
#define SB_NET_BIND_TCP (1ULL << 0)
#define SB_NET_CONNECT_TCP (1ULL << 1)
#define SB_SCOPE_ABSTRACT_UNIX (1ULL << 0) /* ABI 6 */
#define SB_SCOPE_SIGNAL (1ULL << 1)

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#endif
#ifndef PR_CAPBSET_DROP
#define PR_CAPBSET_DROP 24
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef SYS_capset
#define SYS_capset 126
#endif

/* Our own copies of the UAPI structs (same layout), so old headers still compile. */
struct sb_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net; /* ABI 4 */
    uint64_t scoped;             /* ABI 6 */
};
struct sb_net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
};
struct sb_cap_header {
    uint32_t version;
    int pid;
};
struct sb_cap_data {
    uint32_t effective, permitted, inheritable;
};
struct __attribute__((packed)) sb_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
};

enum step {
    STEP_SETSID = 1,
    STEP_PDEATHSIG,
    STEP_DUP,
    STEP_RLIMIT,
    STEP_CHDIR,
    STEP_NNP,
    STEP_CAPS,
    STEP_LANDLOCK,
    STEP_EXEC
};
static const char *step_names[] = {"",
                                   "setsid",
                                   "prctl(PR_SET_PDEATHSIG)",
                                   "dup2",
                                   "setrlimit",
                                   "chdir",
                                   "prctl(PR_SET_NO_NEW_PRIVS)",
                                   "capset",
                                   "landlock_restrict_self",
                                   "exec"};

static int landlock_version(void) {
    long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return v < 0 ? 0 : (int)v;
}

static uint64_t handled_for_abi(int abi) {
    uint64_t all = SB_FS_ABI1_ALL;
    if (abi >= 2) all |= SB_FS_REFER;
    if (abi >= 3) all |= SB_FS_TRUNCATE;
    if (abi >= 5) all |= SB_FS_IOCTL_DEV;
    return all;
}

/* Add one path-beneath rule; a path that cannot be opened is skipped (it may not exist here). */
static int add_rule(int ruleset, const char *path, uint64_t access) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) access &= SB_FS_FILE_RIGHTS;
    struct sb_path_beneath_attr attr = {.allowed_access = access, .parent_fd = fd};
    long rc = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &attr, 0);
    int saved = errno;
    close(fd);
    if (rc < 0) {
        /* A rule on a file (not a directory) may only carry file rights. */
        if (saved == EINVAL) return 0;
        errno = saved;
        return -1;
    }
    return 0;
}

/* Allow `access` (TCP connect or bind) to each port of the list; what no rule grants is denied. */
static int add_port_rules(int ruleset, PyObject *ports, uint64_t access) {
    Py_ssize_t n = PyList_Size(ports);
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long port = PyLong_AsUnsignedLongLong(PyList_GetItem(ports, i));
        if (PyErr_Occurred()) return -1;
        if (port > 65535) {
            PyErr_Format(PyExc_ValueError, "sandbox: port %llu out of range", port);
            return -1;
        }
        struct sb_net_port_attr attr = {.allowed_access = access, .port = port};
        if (syscall(SYS_landlock_add_rule, ruleset, SB_RULE_NET_PORT, &attr, 0) < 0) {
            PyErr_Format(PyExc_OSError, "sandbox: landlock_add_rule port %llu: %s", port, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Build the ruleset before fork; returns its fd, -1 when Landlock is unavailable (not an error).
 * ports: NULL (no network rules) or a list of TCP ports that may be connected to; binds: NULL or a
 * list of TCP ports that may be bound (only with ports). */
static int build_ruleset(PyObject *rw, PyObject *ro, PyObject *ports, PyObject *binds, int *error) {
    *error = 0;
    int abi = landlock_version();
    if (abi <= 0) return -1;
    uint64_t handled = handled_for_abi(abi);
    struct sb_ruleset_attr attr = {.handled_access_fs = handled};
    /* The kernel takes the struct as long as it knows; a shorter size keeps older kernels happy. */
    size_t attr_size = sizeof(uint64_t);
    if (abi >= 4) {
        if (ports != NULL) attr.handled_access_net = SB_NET_BIND_TCP | SB_NET_CONNECT_TCP;
        attr_size = 2 * sizeof(uint64_t);
    }
    if (abi >= 6) {
        attr.scoped = SB_SCOPE_ABSTRACT_UNIX | SB_SCOPE_SIGNAL;
        attr_size = sizeof(attr);
    }
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
    if (ruleset < 0) return -1;
    if (abi >= 4 && ports != NULL
        && (add_port_rules(ruleset, ports, SB_NET_CONNECT_TCP) < 0
            || (binds != NULL && add_port_rules(ruleset, binds, SB_NET_BIND_TCP) < 0))) {
        close(ruleset);
        *error = 1;
        return -1;
    }
    uint64_t read_exec = SB_FS_EXECUTE | SB_FS_READ_FILE | SB_FS_READ_DIR;
    for (int pass = 0; pass < 2; pass++) {
        PyObject *list = pass == 0 ? rw : ro;
        uint64_t access = pass == 0 ? handled : read_exec;
        Py_ssize_t n = PyList_Size(list);
        for (Py_ssize_t i = 0; i < n; i++) {
            const char *path = PyUnicode_AsUTF8(PyList_GetItem(list, i));
            if (path == NULL) {
                close(ruleset);
                *error = 1;
                return -1;
            }
            if (path[0] != '\0' && add_rule(ruleset, path, access) < 0) {
                PyErr_Format(PyExc_OSError, "sandbox: landlock_add_rule %s: %s", path, strerror(errno));
                close(ruleset);
                *error = 1;
                return -1;
            }
        }
    }
    return ruleset;
}

/* NULL-terminated char* array from a list of str (the strings stay owned by the list). */
static char **string_array(PyObject *list) {
    Py_ssize_t n = PyList_Size(list);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (out == NULL) return (char **)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = (char *)PyUnicode_AsUTF8(PyList_GetItem(list, i));
        if (out[i] == NULL) {
            PyMem_Free(out);
            return NULL;
        }
    }
    return out;
}

static void fail(int errfd, int step) {
    int msg[2] = {step, errno};
    ssize_t ignored = write(errfd, msg, sizeof(msg));
    (void)ignored;
    _exit(127);
}

static PyObject *sb_spawn(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *argv_list, *env_list, *rlimits, *rw, *ro, *ports = Py_None, *binds = Py_None;
    const char *cwd;
    int in_fd, out_fd, err_fd;
    if (!PyArg_ParseTuple(args, "O!O!siiiO!O!O!|OO", &PyList_Type, &argv_list, &PyList_Type, &env_list, &cwd,
                          &in_fd, &out_fd, &err_fd, &PyList_Type, &rlimits, &PyList_Type, &rw, &PyList_Type, &ro,
                          &ports, &binds))
        return NULL;
    if (ports != Py_None && !PyList_Check(ports))
        return PyErr_Format(PyExc_TypeError, "sandbox: connect_ports must be a list of ints or None");
    if (binds != Py_None && (!PyList_Check(binds) || ports == Py_None))
        return PyErr_Format(PyExc_TypeError, "sandbox: bind_ports must be None or a list of ints with connect_ports");
    if (PyList_Size(argv_list) < 1) return PyErr_Format(PyExc_ValueError, "sandbox: empty argv");

    Py_ssize_t nlim = PyList_Size(rlimits);
    if (nlim > 16) return PyErr_Format(PyExc_ValueError, "sandbox: too many rlimits");
    int lim_res[16];
    struct rlimit lim_val[16];
    for (Py_ssize_t i = 0; i < nlim; i++) {
        int res;
        unsigned long long value;
        if (!PyArg_ParseTuple(PyList_GetItem(rlimits, i), "iK", &res, &value)) return NULL;
        struct rlimit current;
        if (getrlimit(res, &current) < 0) return PyErr_SetFromErrno(PyExc_OSError);
        rlim_t cap = (rlim_t)value;
        if (current.rlim_max != RLIM_INFINITY && cap > current.rlim_max) cap = current.rlim_max;
        lim_res[i] = res;
        lim_val[i].rlim_cur = cap;
        lim_val[i].rlim_max = cap;
    }

    char **argv = string_array(argv_list);
    if (argv == NULL) return NULL;
    char **envp = string_array(env_list);
    if (envp == NULL) {
        PyMem_Free(argv);
        return NULL;
    }
    int ll_error = 0;
    int ruleset = build_ruleset(rw, ro, ports == Py_None ? NULL : ports, binds == Py_None ? NULL : binds, &ll_error);
    if (ll_error) {
        PyMem_Free(argv);
        PyMem_Free(envp);
        return NULL;
    }
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto cleanup_fail;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(errpipe[0]);
        close(errpipe[1]);
        goto cleanup_fail;
    }
    if (pid == 0) {
        /* Child: async-signal-safe calls only from here on. */
        int efd = errpipe[1];
        if (setsid() < 0) fail(efd, STEP_SETSID);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) fail(efd, STEP_PDEATHSIG);
        if (getppid() != parent) _exit(127); /* the parent died before PDEATHSIG was armed */
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) fail(efd, STEP_DUP);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(efd, STEP_NNP);
        /* Empty the bounding set first (needs CAP_SETPCAP, so only a privileged parent can and must:
         * exec as uid 0 would otherwise regain every capability in it), then the other sets. */
        for (int cap = 0; cap < 64; cap++)
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL && errno != EPERM) fail(efd, STEP_CAPS);
        (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        struct sb_cap_header caphdr = {.version = 0x20080522, .pid = 0}; /* _LINUX_CAPABILITY_VERSION_3 */
        struct sb_cap_data capdata[2] = {{0, 0, 0}, {0, 0, 0}};
        if (syscall(SYS_capset, &caphdr, capdata) < 0) fail(efd, STEP_CAPS);
        if (ruleset >= 0 && syscall(SYS_landlock_restrict_self, ruleset, 0) < 0) fail(efd, STEP_LANDLOCK);
        /* Keep only 0, 1, 2 and the error pipe (close-on-exec): close everything else. */
        int lo = 3;
        for (int fd = lo; fd < efd; fd++) close(fd);
        if (syscall(SYS_close_range, (unsigned)efd + 1, ~0U, 0) < 0) {
            for (int fd = efd + 1; fd < 65536; fd++) close(fd);
        }
        /* Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec. */
        signal(SIGPIPE, SIG_DFL);
        signal(SIGXFSZ, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (Py_ssize_t i = 0; i < nlim; i++)
            if (setrlimit(lim_res[i], &lim_val[i]) < 0) fail(efd, STEP_RLIMIT);
        if (chdir(cwd) < 0) fail(efd, STEP_CHDIR);
        execve(argv[0], argv, envp);
        fail(efd, STEP_EXEC);
    }
    /* Parent. */
    close(errpipe[1]);
    if (ruleset >= 0) close(ruleset);
    int msg[2] = {0, 0};
    ssize_t got;
    Py_BEGIN_ALLOW_THREADS
    do {
        got = read(errpipe[0], msg, sizeof(msg));
    } while (got < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS
    close(errpipe[0]);
    if (got == (ssize_t)sizeof(msg)) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        int step = msg[0] >= 1 && msg[0] <= STEP_EXEC ? msg[0] : 0;
        errno = msg[1];
        PyErr_Format(PyExc_OSError, "sandbox: %s %s: %s", step_names[step], step == STEP_EXEC ? argv[0] : "",
                     strerror(msg[1]));
        PyMem_Free(argv);
        PyMem_Free(envp);
        return NULL;
    }
    PyMem_Free(argv);
    PyMem_Free(envp);
    return PyLong_FromLong((long)pid);

cleanup_fail:
    if (ruleset >= 0) close(ruleset);
    PyMem_Free(argv);
    PyMem_Free(envp);
    return NULL;
}

/* One pass over /proc/<pid>/stat (the call's end looks for its session, group and escapees after
 * every command: in C it costs a fraction of the same loop in Python). */
static PyObject *sb_scan(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    DIR *dir = opendir("/proc");
    if (dir == NULL) return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc");
    size_t cap = 512, n = 0;
    long(*rows)[4] = malloc(cap * sizeof(*rows));
    if (rows == NULL) {
        closedir(dir);
        return PyErr_NoMemory();
    }
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    struct dirent *ent;
    char path[300], buf[512];
    while ((ent = readdir(dir)) != NULL) {
        if (ent->d_name[0] < '1' || ent->d_name[0] > '9') continue;
        snprintf(path, sizeof(path), "%s/stat", ent->d_name);
        int fd = openat(dirfd(dir), path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t got = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (got <= 0) continue;
        buf[got] = '\0';
        char *end = strrchr(buf, ')');
        char state;
        long ppid, pgrp, sid;
        if (end == NULL || sscanf(end + 1, " %c %ld %ld %ld", &state, &ppid, &pgrp, &sid) != 4) continue;
        if (state == 'Z' || state == 'X') continue;
        if (n == cap) {
            void *more = realloc(rows, 2 * cap * sizeof(*rows));
            if (more == NULL) {
                oom = 1;
                break;
            }
            rows = more;
            cap *= 2;
        }
        rows[n][0] = strtol(ent->d_name, NULL, 10);
        rows[n][1] = ppid;
        rows[n][2] = pgrp;
        rows[n][3] = sid;
        n++;
    }
    closedir(dir);
    Py_END_ALLOW_THREADS
    if (oom) {
        free(rows);
        return PyErr_NoMemory();
    }
    PyObject *out = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; out != NULL && i < n; i++) {
        PyObject *row = Py_BuildValue("(llll)", rows[i][0], rows[i][1], rows[i][2], rows[i][3]);
        if (row == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, row);
    }
    free(rows);
    return out;
}

static PyObject *sb_landlock_abi(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyLong_FromLong(landlock_version());
}

static PyMethodDef methods[] = {
    {"spawn", sb_spawn, METH_VARARGS, "Fork and exec one confined program; returns its pid."},
    {"landlock_abi", sb_landlock_abi, METH_NOARGS, "The kernel's Landlock ABI version (0 = none)."},
    {"scan", sb_scan, METH_NOARGS, "Every live process as (pid, ppid, pgrp, session), from /proc."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "spacebot._sandbox",
                                    "Confined process spawning for tools (see native/sandbox.c).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__sandbox(void) { return PyModule_Create(&module); }
