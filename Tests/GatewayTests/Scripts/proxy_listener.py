"""The listening side the test proxies share (fault_proxy.py, slow_proxy.py):
a socket on 127.0.0.1, the "<name> listening on 127.0.0.1:PORT" line the
tests wait for (RunningProcess.listeningPort), and a thread per connection.
Stdlib only."""
import signal
import socket
import sys
import threading


def serve_forever(name, port, handle):
    """Listens on 127.0.0.1:`port` (0: any free one) and runs
    `handle(client_socket)` on a thread of its own for each connection."""
    # A parent may start us with SIGTERM blocked or ignored (the test process
    # does); stopping must still work.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(256)
    print(f"{name} listening on 127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(client,), daemon=True).start()
