/**
 * The token of an `Authorization: Bearer <token>` header (RFC 6750, section
 * 2.1), or null. The scheme matches in any case; the header's leading and
 * trailing whitespace is ignored (HTTP strips it anyway), and one or more
 * spaces separate the scheme from the token. Anything else — another scheme,
 * a tab, a second word after the token — is no token, refused like a bad one.
 */
export function bearerToken(header: string | undefined | null): string | null {
  if (typeof header !== 'string') return null
  const match = /^bearer +([^\s]+)$/i.exec(header.trim())
  return match ? match[1] : null
}
