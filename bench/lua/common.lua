-- Prepended to every scenario script by bench/load.sh.
--
-- Every thread counts the status of each response (and any scenario-specific
-- event via note()); done() adds them up over the threads and prints one
-- machine-readable RESULT line that load.sh parses. All scenarios carry the
-- same response() bookkeeping, so the load generator does the same work per
-- response in the baseline as in the plugin scenarios.

local threads = {}

function setup(thread)
   thread:set("id", #threads)          -- 0-based thread index
   table.insert(threads, thread)
end

statuses = {}                          -- per thread: status -> count
notes = {}                             -- per thread: event -> count

function count(status)
   statuses[status] = (statuses[status] or 0) + 1
end

function note(event)
   notes[event] = (notes[event] or 0) + 1
end

function response(status, headers, body)
   count(status)
end

-- pool_from(file, nthreads): the non-empty lines of file whose 0-based
-- index is this thread's id modulo nthreads: the values (refresh-token
-- chains, assertions) only this thread sends.
function pool_from(file, nthreads)
   local pool, i = {}, 0
   for line in io.lines(file) do
      if line ~= "" then
         if i % nthreads == id then table.insert(pool, line) end
         i = i + 1
      end
   end
   return pool
end

local function add(into, from)
   for k, v in pairs(from or {}) do
      into[k] = (into[k] or 0) + v
   end
end

function done(summary, latency, requests)
   local st, nt = {}, {}
   for _, t in ipairs(threads) do
      add(st, t:get("statuses"))
      add(nt, t:get("notes"))
   end
   local bad, parts = 0, {}
   for code, n in pairs(st) do
      if code < 200 or code > 299 then bad = bad + n end
      table.insert(parts, code .. ":" .. n)
   end
   table.sort(parts)
   local np = {}
   for k, n in pairs(nt) do table.insert(np, k .. ":" .. n) end
   table.sort(np)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f " ..
      "non2xx=%d statuses=%s notes=%s connect=%d read=%d write=%d timeout=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      bad, table.concat(parts, ","), (#np > 0 and table.concat(np, ",") or "-"),
      e.connect, e.read, e.write, e.timeout))
end
