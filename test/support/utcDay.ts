/**
 * Tests that name "today" in one process and let another (the relay, a CLI) decide the day
 * would disagree if UTC midnight fell between the two. Such a test first waits until midnight is
 * at least `marginMs` away, so the whole test runs inside one UTC day. At most `marginMs` of
 * waiting, once a day; a fixed wall-clock wait is right here because the day itself is
 * wall-clock time.
 */
export async function clearOfUtcMidnight(marginMs: number): Promise<string> {
  const msToMidnight = 86_400_000 - (Date.now() % 86_400_000);
  if (msToMidnight < marginMs) await new Promise((r) => setTimeout(r, msToMidnight + 1000));
  return new Date().toISOString().slice(0, 10);
}
