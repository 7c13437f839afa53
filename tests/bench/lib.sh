# What the bench scripts share; sourced, not run. It sets WORK (a directory removed on exit)
# and SERVER_PID (the server the EXIT trap stops; the script sets it when it starts one).

WORK=$(mktemp -d)
SERVER_PID=""
bench_cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap bench_cleanup EXIT

free_port() { # a loopback port nothing listens on now
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for_port PORT [TRIES]: until something listens on PORT, 0.2 s apart (100 tries by
# default). Fails, saying so, if SERVER_PID exits first or the tries run out.
wait_for_port() {
    local port=$1 tries=${2:-100}
    for _ in $(seq 1 "$tries"); do
        if [[ -n "$SERVER_PID" ]] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the server exited before it listened on port $port" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "nothing listens on port $port after $tries tries" >&2
    return 1
}

# fast_calls PORT N: N h2load `Fast` calls (the frame `fast_frame` wrote to $WORK/fast.bin)
# on 4 connections of 8 streams each, with h2load's report on stdout: as fast as the server
# answers, or, with RPS set, at RPS calls a second on each connection.
fast_calls() {
    h2load -c 4 -m 8 -n "$2" ${RPS:+"--rps=$RPS"} -d "$WORK/fast.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$1/holdup.v1.Lab/Fast"
}

stop_server() { # stops SERVER_PID, waits for it, and clears it
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

fast_frame() { # fast_frame FILE: one gRPC frame, uncompressed, FastRequest{message: "x"}
    printf '\x00\x00\x00\x00\x03\x0a\x01x' >"$1"
}
