# Runs the ActiveRecord recipe of docs/recipes.md (its path is the first
# argument) and prints what tests/clients/test_recipes.py checks, as JSON.
#   ruby drive.rb RECIPE check BAD_TOKEN | RECIPE down TOKEN
require "json"
require ARGV[0]

out = {}
if ARGV[1] == "down"
  begin
    Castle.authenticate(ARGV[2])
    out["down"] = "answered"
  rescue => e
    out["down"] = { "status" => Castle.http_status(e), "error" => e.class.name }
  end
  puts out.to_json
  exit
end
token = Castle.sign_in(1, { "device" => "phone", "n" => 1 })
s = Castle.authenticate(token)
out["tokenId"] = token
out["session"] = { "idClass" => s.id.class.name, "id" => s.id.to_s, "userId" => s.user_id,
                   "createdAtClass" => s.created_at.class.name, "utcOffset" => s.created_at.utc_offset,
                   "lifetimeSeconds" => (s.expires_at - s.created_at).round, "data" => s.data }
# three threads (three pooled connections) at once on pgbouncer's two server connections
seen = 3.times.map do
  Thread.new do
    12.times.map { "#{Castle.authenticate(token).id} #{Castle.my_notes(token).join('|')}" }.uniq
  end
end.flat_map(&:value).uniq
out["concurrent"] = seen
out["notes"] = Castle.my_notes(token)
begin
  Castle.authenticate(ARGV[2])
  out["refused"] = "accepted"
rescue => e
  out["refused"] = { "status" => Castle.http_status(e), "error" => e.class.name, "cause" => e.cause.class.name }
end
puts out.to_json
