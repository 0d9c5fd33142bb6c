package flags

import "testing"

func TestConfigWithDefaults(t *testing.T) {
	got := Config{}.WithDefaults()
	if got.Provider != ProviderFile || got.FlagdPort != DefaultFlagdPort || got.PollInterval != DefaultPollInterval ||
		got.CacheSize != DefaultCacheSize || got.CacheTTL != DefaultCacheTTL {
		t.Errorf("Config{}.WithDefaults() = %+v, want every Default*", got)
	}
	set := Config{Provider: ProviderMemory, FlagdPort: 1, PollInterval: 7, CacheSize: -1, CacheTTL: 9}
	if got := set.WithDefaults(); got.Provider != set.Provider || got.FlagdPort != 1 || got.PollInterval != 7 || got.CacheSize != -1 || got.CacheTTL != 9 {
		t.Errorf("WithDefaults changed set fields: %+v", got)
	}
}
