-- Holdfast transfers load for wrk (https://github.com/wg/wrk, LuaJIT scripting).
--
-- Run with as many threads as connections (wrk -t N -c N): each thread then drives exactly one
-- keep-alive connection, in order, so this script can alternate reserve and confirm on it and
-- each connection carries its own bearer token (one client = one token, as real apps are).
-- The threads spend their time in epoll waiting for answers: the load generator itself costs
-- a few per cent of one core (bench/run.py prints its CPU).
--
-- The configuration is a file named by HOLDFAST_WRK_CONFIG, one "key value" a line:
--   mode pair|reserve|batch   pair: reserve then confirm the same id; reserve: reserve only;
--                             batch: immediate transfers, `batch` operations per request
--   hot ID                    (optional) every debit from this one account
--   batch N                   operations per batch request
--   token JWT                 one line per client (thread i takes token i)
--   account ID                the pool: debit and credit are drawn at random from it
-- done() prints one line "HOLDFAST {json}" with counts and wrk's own latency percentiles.

local config_path = os.getenv("HOLDFAST_WRK_CONFIG")
local threads = {}
local counter = 0

local function read_config()
  local file = assert(io.open(config_path, "r"))
  local text = file:read("*a")
  file:close()
  local config = { accounts = {}, tokens = {} }
  for line in text:gmatch("[^\n]+") do
    local key, value = line:match("^(%S+)%s+(.+)$")
    if key == "account" then
      table.insert(config.accounts, value)
    elseif key == "token" then
      table.insert(config.tokens, value)
    elseif key then
      config[key] = value
    end
  end
  return config
end

function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
  table.insert(threads, thread)
end

local hex = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f" }
local digits = {}

-- A random version-4 UUID: the client chooses every id (the contract's idempotency key).
local function uuid()
  for i = 1, 32 do
    digits[i] = hex[math.random(1, 16)]
  end
  digits[13] = "4"
  digits[17] = hex[math.random(9, 12)]
  return table.concat(digits, "", 1, 8) .. "-" .. table.concat(digits, "", 9, 12) .. "-"
    .. table.concat(digits, "", 13, 16) .. "-" .. table.concat(digits, "", 17, 20) .. "-"
    .. table.concat(digits, "", 21, 32)
end

local config, mode, headers, accounts, pending, last, batch_size

function init(args)
  config = read_config()
  mode = config.mode
  accounts = config.accounts
  batch_size = tonumber(config.batch or "500")
  math.randomseed(index * 7919 + os.time())
  local token = config.tokens[(index - 1) % #config.tokens + 1]
  headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
  pairs_done, transfers_done, failures = 0, 0, 0
end

-- Debit and credit: two different accounts of the pool (or the hot account and one other).
local function two_accounts()
  local debit = config.hot or accounts[math.random(1, #accounts)]
  local credit = accounts[math.random(1, #accounts)]
  while credit == debit do
    credit = accounts[math.random(1, #accounts)]
  end
  return debit, credit
end

local RESERVE = '{"id":"%s","debit_account_id":"%s","credit_account_id":"%s",'
  .. '"amount":1,"currency":"EUR"%s}'

local function batch_body()
  local operations = {}
  for i = 1, batch_size do
    local debit, credit = two_accounts()
    operations[i] = string.format(RESERVE, uuid(), debit, credit, ',"op":"reserve","immediate":true')
  end
  return '{"operations":[' .. table.concat(operations, ",") .. "]}"
end

function request()
  if mode == "batch" then
    return wrk.format("POST", "/v1/transfers:batch", headers, batch_body())
  end
  if pending then
    return wrk.format("POST", "/v1/transfers/" .. pending .. "/confirm", headers, "{}")
  end
  last = uuid()
  local debit, credit = two_accounts()
  return wrk.format("POST", "/v1/transfers", headers, string.format(RESERVE, last, debit, credit, ""))
end

function response(status, response_headers, body)
  if mode == "batch" then
    if status == 200 then
      local _, confirmed = body:gsub('"state":%s*"confirmed"', "")
      transfers_done = transfers_done + confirmed
    else
      failures = failures + 1
    end
  elseif pending then -- the answer to a confirm
    pending = nil
    if status == 200 then
      pairs_done = pairs_done + 1
      transfers_done = transfers_done + 1
    else
      failures = failures + 1
    end
  elseif status == 201 then
    if mode == "pair" then
      pending = last
    else
      transfers_done = transfers_done + 1
    end
  else
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local pairs_total, transfers_total, failures_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    pairs_total = pairs_total + (thread:get("pairs_done") or 0)
    transfers_total = transfers_total + (thread:get("transfers_done") or 0)
    failures_total = failures_total + (thread:get("failures") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    'HOLDFAST {"duration_s": %.3f, "requests": %d, "pairs": %d, "transfers": %d, '
      .. '"failures": %d, "errors": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, '
      .. '"max_ms": %.3f}\n',
    summary.duration / 1e6, summary.requests, pairs_total, transfers_total, failures_total,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000
  ))
end
