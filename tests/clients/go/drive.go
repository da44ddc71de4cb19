// Runs a Go recipe of docs/recipes.md (built in the same package) and prints
// what tests/clients/test_recipes.py checks, as JSON.
//   drive check BAD_TOKEN   the recipe's five points
//   drive down TOKEN        authenticate against CASTLE_REQUEST_URL (nothing listening)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
)

func main() {
	ctx := context.Background()
	out := map[string]any{}
	if os.Args[1] == "down" {
		_, err := Authenticate(ctx, os.Args[2])
		out["down"] = map[string]any{"status": HTTPStatus(err), "answered": err == nil}
		print(out)
		return
	}
	token, err := SignIn(ctx, 1, map[string]any{"device": "phone", "n": 1})
	must(err)
	s, err := Authenticate(ctx, token)
	must(err)
	zone, offset := s.CreatedAt.Zone()
	out["tokenId"] = token
	out["session"] = map[string]any{"id": fmt.Sprint(s.ID), "userId": s.UserID, "zone": zone, "offset": offset,
		"lifetimeSeconds": s.ExpiresAt.Sub(s.CreatedAt).Seconds(), "data": s.Data}
	// three at once, past any prepare threshold, on pgbouncer's two server connections
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for t := 0; t < 3; t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 12; i++ {
				a, err := Authenticate(ctx, token)
				must(err)
				notes, err := MyNotes(ctx, token)
				must(err)
				mu.Lock()
				seen[fmt.Sprint(a.ID, " ", strings.Join(notes, "|"))] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var keys []string
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out["concurrent"] = keys
	notes, err := MyNotes(ctx, token)
	must(err)
	out["notes"] = notes
	_, err = Authenticate(ctx, os.Args[2])
	out["refused"] = map[string]any{"status": HTTPStatus(err), "error": fmt.Sprintf("%T", err)}
	print(out)
}

func print(out map[string]any) {
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
