"""The runtime inside every child process (channel, branch, worker, memory, gateway, cortex):
its bus connection, heartbeats, stop handling and supervisor watch. Nothing here is supervisor code;
the supervisor only starts the processes that run it."""
