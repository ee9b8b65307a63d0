-- wrk script of bench/loadgen.py: requests the paths of a file in order, each thread its own share
-- of the lines, counts answers whose status is not an expected one, answers 429 (rate limited) and
-- answers by status, and prints one JSON summary.
-- Arguments (after --): paths file, expected statuses ("400,429"), thread count, Accept header ("" for none).

local threads = {}
local thread_count = 0

function setup(thread)
    thread:set("index", thread_count)
    thread_count = thread_count + 1
    table.insert(threads, thread)
end

-- Globals, so that done() can read them from each thread with thread:get().
paths, n, i, wrapped, unexpected, limited, statuses = {}, 0, 0, 0, 0, 0, {}
local expected = {}
local headers = {}

function init(args)
    for status in string.gmatch(args[2], "%d+") do
        expected[tonumber(status)] = true
    end
    local nthreads = tonumber(args[3])
    if args[4] ~= nil and args[4] ~= "" then
        headers["Accept"] = args[4]
    end
    -- Each request is formatted here, once: formatting one per request in request() took the load generator
    -- about as much CPU per request as the server's ceiling route, with many distinct paths.
    local k = 0
    for line in io.lines(args[1]) do
        if k % nthreads == index then
            n = n + 1
            paths[n] = wrk.format("GET", line, headers)
        end
        k = k + 1
    end
end

function request()
    i = i + 1
    if i > n then
        i = 1
        wrapped = wrapped + 1
    end
    return paths[i]
end

function response(status, response_headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    if not expected[status] then
        unexpected = unexpected + 1
    end
    if status == 429 then
        limited = limited + 1
    end
end

function done(summary, latency, requests)
    local unexpected_total, limited_total, wrapped_total, paths_total = 0, 0, 0, 0
    local by_status = {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            by_status[status] = (by_status[status] or 0) + count
        end
        unexpected_total = unexpected_total + thread:get("unexpected")
        limited_total = limited_total + thread:get("limited")
        wrapped_total = wrapped_total + thread:get("wrapped")
        paths_total = paths_total + thread:get("n")
    end
    local parts = {}
    for status, count in pairs(by_status) do
        table.insert(parts, string.format('"%d": %d', status, count))
    end
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests": %d, "duration_s": %.6f, "p50_ms": %.4f, "p99_ms": %.4f, "max_ms": %.4f, '
            .. '"unexpected": %d, "limited": %d, "socket_errors": %d, "timeouts": %d, "wrapped": %d, "paths": %d, '
            .. '"statuses": {%s}}\n',
        summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
        latency.max / 1e3, unexpected_total, limited_total, e.connect + e.read + e.write, e.timeout, wrapped_total, paths_total,
        table.concat(parts, ", ")))
end
