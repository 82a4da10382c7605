"""A delaying TCP relay: what one-way network latency does to a protocol, without netem.

It accepts on a port, connects to a target, and passes each chunk the target sends back
``delay_s`` after it arrived (order kept, nothing throttled), so every round trip through
it takes ``delay_s`` longer, as netem on a link would make it. The network-fault tests run
it inside a namespace (the kernel here has no netem: CONFIG_NET_SCH_NETEM is not set), and
``python -m tvision.bench.edge`` in front of the edge. PR_SET_PDEATHSIG ends it with the
process that started it; it serves until its stdin closes.

    python -c RELAY_SCRIPT <launcher pid> <listen port> <target host> <target port> <delay s>

It prints "ready" once listening, and "connection" for each connection it accepts.
"""

RELAY_SCRIPT = """
import asyncio, ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
listen_port, host, port = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
delay_s = float(sys.argv[5])

async def pump(reader, writer, delay_s):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()
    async def read():
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + delay_s, data))
        finally:
            queue.put_nowait((loop.time() + delay_s, b""))
    reading = asyncio.ensure_future(read())
    try:
        while True:
            due, data = await queue.get()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        reading.cancel()
        writer.close()

async def handle(client_reader, client_writer):
    print("connection", flush=True)
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    except OSError:
        client_writer.close()
        return
    await asyncio.wait(
        [asyncio.ensure_future(pump(client_reader, upstream_writer, 0.0)),
         asyncio.ensure_future(pump(upstream_reader, client_writer, delay_s))],
        return_when=asyncio.FIRST_COMPLETED,
    )
    upstream_writer.close()
    client_writer.close()

async def main():
    server = await asyncio.start_server(handle, host, listen_port)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()

asyncio.run(main())
"""
