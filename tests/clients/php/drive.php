<?php
// Runs the PDO recipe of docs/recipes.md (its path is the first argument) and
// prints what tests/clients/test_recipes.py checks, as JSON.
//   php drive.php RECIPE check BAD_TOKEN | RECIPE down TOKEN
require $argv[1];

$out = [];
if ($argv[2] === 'loop') {
    // one of several processes at once, on pgbouncer's two server connections
    $seen = [];
    for ($i = 0; $i < 12; $i++) {
        $seen[castle_authenticate($argv[3])['id'] . ' ' . implode('|', castle_my_notes($argv[3]))] = true;
    }
    echo json_encode(['seen' => array_keys($seen)]), "\n";
    exit;
}
if ($argv[2] === 'down') {
    try {
        castle_authenticate($argv[3]);
        $out['down'] = 'answered';
    } catch (PDOException $e) {
        $out['down'] = ['status' => castle_http_status($e), 'sqlstate' => $e->errorInfo[0] ?? $e->getCode()];
    }
    echo json_encode($out), "\n";
    exit;
}
$token = castle_sign_in(1, ['device' => 'phone', 'n' => 1]);
$s = castle_authenticate($token);
$out['tokenId'] = $token;
$out['session'] = ['idType' => get_debug_type($s['id']), 'id' => (string) $s['id'], 'userId' => $s['user_id'],
    'createdAtClass' => get_class($s['created_at']), 'offset' => $s['created_at']->getOffset(),
    'lifetimeSeconds' => $s['expires_at']->getTimestamp() - $s['created_at']->getTimestamp(), 'data' => $s['data']];
$seen = [];
for ($i = 0; $i < 12; $i++) {
    $seen[$s['id'] . ' ' . implode('|', castle_my_notes($token)) . ' ' . castle_authenticate($token)['id']] = true;
}
$out['concurrent'] = array_keys($seen);
$out['notes'] = castle_my_notes($token);
try {
    castle_authenticate($argv[3]);
    $out['refused'] = 'accepted';
} catch (PDOException $e) {
    $out['refused'] = ['status' => castle_http_status($e), 'sqlstate' => $e->errorInfo[0], 'error' => get_class($e)];
}
echo json_encode($out), "\n";
