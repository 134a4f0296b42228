-- wrk script for bench/put.sh: raw PUT uploads of one body size, a new file name per request.
--   wrk -s bench/put.lua URL -- SIZE [TOKEN] [PREFIX]
-- SIZE in bytes; TOKEN, when given and not "-", is sent as "Authorization: Bearer TOKEN";
-- PREFIX (default "f") starts every file name, so runs do not overwrite each other's files.

local size, prefix
local counter = 0
thread_id = 0 -- set per thread by setup()
local threads = {}

function setup(thread)
    thread:set("thread_id", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    size = tonumber(args[1] or "16384")
    local token = args[2]
    prefix = args[3] or "f"
    wrk.method = "PUT"
    wrk.body = string.rep("x", size)
    wrk.headers["Content-Type"] = "application/octet-stream"
    if token ~= nil and token ~= "" and token ~= "-" then
        wrk.headers["Authorization"] = "Bearer " .. token
    end
end

function request()
    counter = counter + 1
    return wrk.format(nil, string.format("/v1/files/%s-%d-%d", prefix, thread_id, counter))
end
